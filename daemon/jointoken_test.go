package daemon

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/cluster"
	"github.com/pmgcm/pmgcm/fsm"
)

// TestJoinTokenExpiry: the expiry rides in the salt, under the token's HMAC; a salt of
// the first release (16 bytes) never expires; the master refuses a wrong token and an
// expired one, each with its own sentinel.
func TestJoinTokenExpiry(t *testing.T) {
	caKey := []byte("-----BEGIN EC PRIVATE KEY-----\nnot a real key\n-----END EC PRIVATE KEY-----\n")
	exp := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	salt, err := newTokenSalt(exp)
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := tokenExpiry(salt); !ok || !got.Equal(exp) {
		t.Fatalf("expiry %v (%v), want %v", got, ok, exp)
	}
	legacy, err := newTokenSalt(time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if len(legacy) != 16 {
		t.Fatalf("a salt without expiry is %d bytes, the first release's are 16", len(legacy))
	}
	if _, ok := tokenExpiry(legacy); ok {
		t.Fatal("a 16-byte salt has an expiry")
	}
	// Moving the expiry changes the token: it is covered by the HMAC.
	later := bytes.Clone(salt)
	later[len(later)-1]++
	if joinToken(caKey, salt) == joinToken(caKey, later) {
		t.Fatal("the expiry is not covered by the token's HMAC")
	}

	tok := joinToken(caKey, salt)
	cl := &fsm.Cluster{CAKeyPEM: caKey, JoinTokenSalt: salt, JoinTokenHash: hashToken(tok)}
	if err := checkJoinToken(cl, tok, exp.Add(-time.Second)); err != nil {
		t.Errorf("before the expiry: %v", err)
	}
	if err := checkJoinToken(cl, tok, exp); !errors.Is(err, ErrTokenExpired) {
		t.Errorf("at the expiry: %v, want ErrTokenExpired", err)
	}
	if err := checkJoinToken(cl, "wrong", exp.Add(-time.Hour)); !errors.Is(err, ErrBadToken) {
		t.Errorf("a wrong token: %v, want ErrBadToken", err)
	}
	if err := checkJoinToken(cl, "wrong", exp.Add(time.Hour)); !errors.Is(err, ErrBadToken) {
		t.Errorf("a wrong token after the expiry: %v, want ErrBadToken (the expiry tells nothing to a guesser)", err)
	}

	// What a member may forward: a token derived from the CA key, not one of its choosing.
	if !tokenDerived(cl, fsm.SetJoinToken{Hash: hashToken(joinToken(caKey, legacy)), Salt: legacy}) {
		t.Error("a derived token is refused")
	}
	for _, c := range []fsm.SetJoinToken{
		{Hash: hashToken("chosen"), Salt: legacy},
		{Hash: nil, Salt: legacy},
	} {
		if tokenDerived(cl, c) {
			t.Errorf("%+v passes as derived", c)
		}
	}
}

// TestMaskMembership: a stranger learns the master only about a fenced member; what the
// standing check reads stays; the join info tells no CID.
func TestMaskMembership(t *testing.T) {
	full := cluster.Membership{ClusterID: "c", Epoch: 3, Member: true, CID: 4, Applied: 99,
		MasterCID: 1, MasterName: "n1", MasterIP: "10.0.0.1"}
	got := maskMembership(full)
	want := cluster.Membership{ClusterID: "c", Epoch: 3, Member: true, CID: 4, Applied: 99}
	if got != want {
		t.Errorf("member: %+v, want %+v", got, want)
	}
	full.Fenced = true
	got = maskMembership(full)
	if got != full {
		t.Errorf("fenced member: %+v, want %+v", got, full)
	}
	if info := maskJoinInfo(cluster.JoinInfo{ClusterID: "c", Name: "n1", CID: 1, ProtocolVersion: 2, StateFormat: 1}); info.CID != 0 ||
		info.ClusterID != "c" || info.Name != "n1" || info.ProtocolVersion != 2 || info.StateFormat != 1 {
		t.Errorf("join info %+v", info)
	}
}
