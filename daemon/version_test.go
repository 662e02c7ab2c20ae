package daemon

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/cluster"
	"github.com/pmgcm/pmgcm/fsm"
	"github.com/pmgcm/pmgcm/internal/version"
)

// applyTo applies cmd to f at index idx, failing the test on a refusal.
func applyTo(t *testing.T, f *fsm.FSM, idx uint64, cmd fsm.Command) {
	t.Helper()
	b, err := fsm.Encode(cmd)
	if err != nil {
		t.Fatal(err)
	}
	if res := f.Apply(&raft.Log{Type: raft.LogCommand, Index: idx, Data: b}).(*fsm.Result); res.Err != nil {
		t.Fatalf("apply %T: %v", cmd, res.Err)
	}
}

// TestCheckJoinLevel: at cluster version 1 every build joins (a release 0.1.0 node sends
// no level); once the version is recorded higher, an older node is refused with both
// versions named.
func TestCheckJoinLevel(t *testing.T) {
	k := &versionKeeper{fsm: fsm.New()}
	applyTo(t, k.fsm, 1, fsm.CreateCluster{ClusterID: "c", CreatedAt: time.Now(), Founder: fsm.Member{
		CID: 1, Name: "pmg1", IP: "127.0.0.1", Port: 8006, Fingerprint: "AA:BB", Suffrage: fsm.Voter}})
	old := cluster.AdmitRequest{Name: "old"}
	cur := cluster.AdmitRequest{Name: "new", Version: version.Version, Level: version.Level}
	if err := k.checkJoinLevel(old); err != nil {
		t.Fatalf("release 0.1.0 node refused by a cluster at level 1: %v", err)
	}
	applyTo(t, k.fsm, 2, fsm.SetClusterVersion{Version: version.LevelClusterVersion})
	err := k.checkJoinLevel(old)
	if !errors.Is(err, ErrIncompatible) || !strings.Contains(err.Error(), version.LevelName(version.LevelClusterVersion)) ||
		!strings.Contains(err.Error(), oldNodeVersion) {
		t.Fatalf("release 0.1.0 node at cluster version 2: %v", err)
	}
	if err := k.checkJoinLevel(cur); err != nil {
		t.Fatalf("a node of this build refused: %v", err)
	}
}

func TestNodeLevelAndMembers(t *testing.T) {
	if nodeLevel(api.Node{}) != version.LevelRelease010 || nodeLevel(api.Node{Level: 7}) != 7 {
		t.Fatal("nodeLevel")
	}
	a := []fsm.Member{{CID: 1}, {CID: 3}}
	if !sameMembers(a, []fsm.Member{{CID: 3}, {CID: 1}}) || sameMembers(a, []fsm.Member{{CID: 1}}) ||
		sameMembers(a, []fsm.Member{{CID: 1}, {CID: 4}}) {
		t.Fatal("sameMembers")
	}
}

// TestCheckJoinLevelExpiringToken: while the cluster's join token expires, a node of
// release 0.1.0 is refused even at cluster version 1 (as master it would admit with the
// token after its expiry), with what to do; this build's nodes join, and an old node
// joins again once the token no longer expires.
func TestCheckJoinLevelExpiringToken(t *testing.T) {
	k := &versionKeeper{fsm: fsm.New()}
	salt, err := newTokenSalt(time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	applyTo(t, k.fsm, 1, fsm.CreateCluster{ClusterID: "c", CreatedAt: time.Now(), JoinTokenSalt: salt,
		JoinTokenHash: make([]byte, 32), Founder: fsm.Member{CID: 1, Name: "pmg1", IP: "127.0.0.1", Port: 8006,
			Fingerprint: "AA:BB", Suffrage: fsm.Voter}})
	old := cluster.AdmitRequest{Name: "old"}
	err = k.checkJoinLevel(old)
	if !errors.Is(err, ErrIncompatible) || !strings.Contains(err.Error(), "would not enforce the join token's expiry") ||
		!strings.Contains(err.Error(), "without --ttl") {
		t.Fatalf("release 0.1.0 node with an expiring token: %v", err)
	}
	if err := k.checkJoinLevel(cluster.AdmitRequest{Name: "new", Version: version.Version, Level: version.Level}); err != nil {
		t.Fatalf("a node of this build refused: %v", err)
	}
	plain, err := newTokenSalt(time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	applyTo(t, k.fsm, 2, fsm.SetJoinToken{Hash: make([]byte, 32), Salt: plain})
	if err := k.checkJoinLevel(old); err != nil {
		t.Fatalf("release 0.1.0 node with a token that does not expire: %v", err)
	}
}
