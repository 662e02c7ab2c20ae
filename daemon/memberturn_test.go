package daemon

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/pmgcm/pmgcm/cluster"
	"github.com/pmgcm/pmgcm/fsm"
	"github.com/pmgcm/pmgcm/internal/version"
	"github.com/pmgcm/pmgcm/transport"
)

// TestMemberTurnOneAtATime: changes that take turns never overlap; one that waits past
// its deadline gives up with ErrBusy (wrapping the deadline) and takes nothing, so the
// turn is free again once its holder is done; ending a turn twice ends it once.
func TestMemberTurnOneAtATime(t *testing.T) {
	var turn memberTurn
	var in, most atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				release, err := turn.take(context.Background())
				if err != nil {
					t.Error(err)
					return
				}
				n := in.Add(1)
				for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
				}
				in.Add(-1)
				release()
			}
		}()
	}
	wg.Wait()
	if most.Load() != 1 {
		t.Fatalf("%d changes had the turn at once", most.Load())
	}

	release, err := turn.take(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := turn.take(ctx); !errors.Is(err, ErrBusy) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a change that waited past its deadline: %v, want ErrBusy wrapping the deadline", err)
	}
	release()
	release()                   // a second call must not end someone else's turn
	next, err := turn.take(ctx) // ended context: takes only a free turn
	if err != nil {
		t.Fatalf("the turn is not free after its holder ended it: %v", err)
	}
	if _, err := turn.take(ctx); !errors.Is(err, ErrBusy) {
		t.Fatalf("a second release freed the turn of the next holder: %v", err)
	}
	next()
}

// levelAnswer answers every node-info request with this build's level, so that the
// version duty proposes to raise the cluster version.
var levelAnswer = roundTrip(func(r *http.Request) (*http.Response, error) {
	return &http.Response{StatusCode: http.StatusOK, Header: http.Header{}, Request: r,
		Body: io.NopCloser(strings.NewReader(fmt.Sprintf(`{"applied_index":0,"level":%d}`, version.Level)))}, nil
})

// TestSlowMembershipApplyBlocksNoRead: while a membership change waits for its commit
// (here the cluster version's, held up on purpose), linearizable reads and configuration
// writes go on, and another membership change (the voter policy) gives up at its own
// deadline with ErrBusy instead of waiting for the slow one; once the slow commit is
// done, both changes go through.
func TestSlowMembershipApplyBlocksNoRead(t *testing.T) {
	d := leaderDaemon(t, levelAnswer, testMember(1, fsm.Voter), testMember(2, fsm.Nonvoter))
	d.versions = newVersionKeeper(d)
	entered, unblock := make(chan struct{}), make(chan struct{})
	d.versions.apply = func(ctx context.Context, cmd fsm.Command) (*fsm.Result, error) {
		close(entered)
		<-unblock
		return d.writes.applyLocal(ctx, cmd)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	recorded := make(chan error, 1)
	go func() { recorded <- d.versions.record(ctx) }()
	select {
	case <-entered:
	case err := <-recorded:
		t.Fatalf("the version duty proposed nothing: %v", err)
	case <-ctx.Done():
		t.Fatal("the version duty never proposed")
	}

	rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
	defer rcancel()
	if _, err := d.writes.localReads.index(rctx); err != nil { // the master's linearizable read
		t.Fatalf("a linearizable read behind a slow membership commit: %v", err)
	}
	if _, err := d.writes.applyLocal(rctx, &fsm.ConfigSet{Key: "k", Value: []byte("v")}); err != nil {
		t.Fatalf("a configuration write behind a slow membership commit: %v", err)
	}

	reconciled := make(chan error, 1)
	go func() {
		vctx, vcancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer vcancel()
		reconciled <- d.voters.reconcile(vctx)
	}()
	select {
	case err := <-reconciled:
		if !errors.Is(err, ErrBusy) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("the voter policy behind a slow membership commit: %v, want ErrBusy at its deadline", err)
		}
	case <-time.After(5 * time.Second):
		close(unblock)
		t.Fatal("the voter policy waited for the slow membership commit past its own deadline")
	}
	if cfg, err := d.rn().Configuration(); err != nil || len(cfg.Servers) != 1 {
		t.Fatalf("the voter policy that gave up changed the raft configuration: %+v (%v)", cfg.Servers, err)
	}

	close(unblock)
	if err := <-recorded; err != nil {
		t.Fatal(err)
	}
	if cv := d.fsm.ClusterVersion(); cv != version.Level {
		t.Fatalf("cluster version %d, want %d", cv, version.Level)
	}
	if err := d.voters.reconcile(ctx); err != nil {
		t.Fatalf("the voter policy once the slow commit was done: %v", err)
	}
	if cfg, err := d.rn().Configuration(); err != nil || len(cfg.Servers) != 2 {
		t.Fatalf("cid 2 not added to raft: %+v (%v)", cfg.Servers, err)
	}
}

// TestConcurrentAdmissions: joins that reach the master at the same time are admitted
// one after the other: each gets a CID of its own, in a row, and is in the Raft
// configuration; of two joins with the same name, exactly one is admitted and the
// other is refused as a member that exists.
func TestConcurrentAdmissions(t *testing.T) {
	ca, err := transport.NewCA("c-1")
	if err != nil {
		t.Fatal(err)
	}
	salt, err := newTokenSalt(time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	token := joinToken(ca.KeyPEM, salt)
	d := leaderDaemonOf(t, levelAnswer, fsm.CreateCluster{ClusterID: "c-1", CreatedAt: time.Unix(1, 0).UTC(),
		CACertPEM: ca.CertPEM, CAKeyPEM: ca.KeyPEM, JoinTokenSalt: salt, JoinTokenHash: hashToken(token)},
		nil, testMember(1, fsm.Voter))
	d.versions = newVersionKeeper(d)
	d.admitter = newAdmitter(d)
	key, _, err := transport.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	pub := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	req := func(name, ip string) cluster.AdmitRequest {
		// Port 9 (discard): nothing listens, so Raft's replication to the new
		// non-voters fails fast; a non-voter counts for no commit.
		return cluster.AdmitRequest{Token: token, Name: name, IP: ip, Port: 9, PublicKeyPEM: pub,
			Version: version.Version, Level: version.Level}
	}
	reqs := []cluster.AdmitRequest{req("j1", "127.0.0.201"), req("j2", "127.0.0.202"), req("j3", "127.0.0.203"),
		req("j4", "127.0.0.204"), req("twin", "127.0.0.205"), req("twin", "127.0.0.206")}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	type answer struct {
		adm *cluster.Admission
		err error
	}
	answers := make([]answer, len(reqs))
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, r := range reqs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			adm, err := d.admitter.admitHere(ctx, r)
			answers[i] = answer{adm, err}
		}()
	}
	close(start)
	wg.Wait()

	cids := map[uint64]string{}
	twins := 0
	for i, a := range answers {
		name := reqs[i].Name
		if a.err != nil {
			if name == "twin" && errors.Is(a.err, fsm.ErrMemberExists) {
				continue
			}
			t.Fatalf("admit %s (%s): %v", name, reqs[i].IP, a.err)
		}
		if name == "twin" {
			twins++
		}
		if prev, dup := cids[a.adm.CID]; dup {
			t.Fatalf("cid %d given to %s and to %s", a.adm.CID, prev, name)
		}
		cids[a.adm.CID] = name
	}
	if twins != 1 {
		t.Fatalf("%d of the two joins named twin were admitted, want 1", twins)
	}
	if len(cids) != 5 {
		t.Fatalf("%d nodes admitted, want 5: %v", len(cids), cids)
	}
	for cid := uint64(2); cid <= 6; cid++ {
		if _, ok := cids[cid]; !ok {
			t.Fatalf("the admitted cids %v are not 2 to 6", cids)
		}
		if m, ok := d.fsm.Member(cid); !ok || m.Name != cids[cid] {
			t.Fatalf("member %d is %+v (%v), want %s", cid, m, ok, cids[cid])
		}
	}
	if next := d.fsm.Cluster().NextCID; next != 7 {
		t.Fatalf("next cid %d, want 7", next)
	}
	cfg, err := d.rn().Configuration()
	if err != nil {
		t.Fatal(err)
	}
	in := map[raft.ServerID]raft.ServerSuffrage{}
	for _, s := range cfg.Servers {
		in[s.ID] = s.Suffrage
	}
	for cid := range cids {
		if s, ok := in[raft.ServerID(fmt.Sprint(cid))]; !ok || s != raft.Nonvoter {
			t.Fatalf("admitted cid %d is not a raft non-voter: %+v", cid, cfg.Servers)
		}
	}
}
