package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/pmgcm/pmgcm/cluster"
	"github.com/pmgcm/pmgcm/fsm"
	"github.com/pmgcm/pmgcm/raftnode"
	"github.com/pmgcm/pmgcm/transport"
)

// TestStandingInNodeFile: each standing is kept in node.json in the fields of the first
// release, and read back as the same standing.
func TestStandingInNodeFile(t *testing.T) {
	f := &fenceInfo{ClusterID: "c", Epoch: 3, MasterCID: 1, MasterName: "m", MasterIP: "10.0.0.1"}
	for _, c := range []struct {
		st   standing
		json string
	}{
		{standing{}, `{"format":0,"name":"n","ip":"","port":0,"cid":2}`},
		{removedFrom("c"), `{"format":0,"name":"n","ip":"","port":0,"cid":2,"removed":"c"}`},
		{fencedBy(f), `{"format":0,"name":"n","ip":"","port":0,"cid":2,"fenced":{"cluster_id":"c","epoch":3,"master_cid":1,"master_name":"m","master_ip":"10.0.0.1"}}`},
		{standing{kind: standPromoting, pendingEpoch: 4}, `{"format":0,"name":"n","ip":"","port":0,"cid":2,"pending_epoch":4}`},
	} {
		// From any other standing to this one.
		nf := nodeFile{Name: "n", CID: 2, Removed: "old", PendingEpoch: 9}.withStanding(c.st)
		b, _ := json.Marshal(nf)
		if string(b) != c.json {
			t.Errorf("standing %v in node.json: %s, want %s", c.st.kind, b, c.json)
		}
		var back nodeFile
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		got := back.standing()
		if got.kind != c.st.kind || got.removedFrom != c.st.removedFrom || got.pendingEpoch != c.st.pendingEpoch || (got.fence == nil) != (c.st.fence == nil) {
			t.Errorf("standing %v read back as %+v", c.st.kind, got)
		}
		if (got.err() != nil) != got.out() {
			t.Errorf("standing %v: err %v, out %v", got.kind, got.err(), got.out())
		}
	}
	if err := removedFrom("c").err(); !errors.Is(err, ErrRemoved) {
		t.Errorf("removed: %v", err)
	}
	if err := fencedBy(f).err(); !errors.Is(err, ErrFenced) {
		t.Errorf("fenced: %v", err)
	}
	if (standing{kind: standPromoting}).talksToPeers() || !(standing{}).talksToPeers() {
		t.Error("only a member talks to its peers")
	}
}

// TestAuthorizeBeforePeersLoaded: the mux opens, and may authorize a handshake, before
// Open has loaded peers.json; the authorizer then refuses (nobody is trusted yet), and
// never dereferences the missing cache, also while the cache is being stored.
func TestAuthorizeBeforePeersLoaded(t *testing.T) {
	d := &Daemon{fsm: fsm.New()}
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 200; j++ {
				if err := d.authorizePeer(transport.ChanRaft, "fp1"); err == nil {
					t.Error("a peer was trusted before the member cache was loaded")
					return
				}
			}
		}()
	}
	d.peers.Store(&peerCache{})
	wg.Wait()
}

// TestReadersDoNotWaitForNodeFileWriter: a writer of node.json (fsync under nodeMu)
// does not hold up the readers of the node's identity: self, and the TLS authorizer.
func TestReadersDoNotWaitForNodeFileWriter(t *testing.T) {
	d := &Daemon{fsm: fsm.New()}
	d.node.Store(&nodeFile{Name: "n", CID: 1})
	d.peers.Store(&peerCache{})
	d.nodeMu.Lock() // a writer in the middle of its fsync
	defer d.nodeMu.Unlock()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = d.self()
		_ = d.authorizePeer(transport.ChanAny, "fp")
		_ = d.checkServing()
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("reading the node's identity waited for the node.json writer")
	}
}

// TestAuthorizerNeverWaits: a CA-verified certificate that is no member's is refused at
// once, not after waiting for the state machine (the authorizer runs inside the TLS
// handshake).
func TestAuthorizerNeverWaits(t *testing.T) {
	f := fsm.New()
	applyAll(t, f, fsm.CreateCluster{ClusterID: "c", Founder: fsm.Member{CID: 1, Name: "a", IP: "127.0.0.1", Port: 1, Fingerprint: "fp1", Suffrage: fsm.Voter, Epoch: 1}})
	d := &Daemon{fsm: f}
	d.node.Store(&nodeFile{Name: "a", CID: 1})
	d.peers.Store(&peerCache{})
	rc := raftnode.DefaultConfig()
	rc.Dir, rc.LocalID, rc.Address = t.TempDir(), "1", "127.0.0.1:1"
	n, err := raftnode.New(rc, f, func() raft.StreamLayer { return nopLayer{} })
	if err != nil {
		t.Fatal(err)
	}
	d.raftp.Store(n) // made, not opened: the state machine does not move
	start := time.Now()
	if err := d.authorizePeer(transport.ChanRPC, "fp-renewed"); !errors.Is(err, transport.ErrPeerRefused) {
		t.Fatalf("unknown certificate: %v", err)
	}
	if took := time.Since(start); took > 200*time.Millisecond {
		t.Fatalf("the authorizer waited %s inside the handshake", took)
	}
}

// nopLayer is a raft.StreamLayer that is never used.
type nopLayer struct{}

func (nopLayer) Accept() (net.Conn, error) { return nil, net.ErrClosed }
func (nopLayer) Close() error              { return nil }
func (nopLayer) Addr() net.Addr            { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }
func (nopLayer) Dial(raft.ServerAddress, time.Duration) (net.Conn, error) {
	return nil, errors.New("no network in this test")
}

// TestGateRefusesInsteadOfWaiting: a second identity-changing operation is refused at
// once, naming the one under way, instead of waiting behind its network calls; the
// standing check sees that an operation began while it asked.
func TestGateRefusesInsteadOfWaiting(t *testing.T) {
	d := &Daemon{}
	leave, err := d.gate.enter("pmgcm join")
	if err != nil {
		t.Fatal(err)
	}
	_, free := d.gate.free()
	if free {
		t.Fatal("the gate is free while a join runs")
	}
	done := make(chan error, 1)
	go func() {
		_, err := d.create(context.Background())
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, ErrBusy) {
			t.Fatalf("create during a join: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("create waited for the join")
	}
	leave()
	mark, free := d.gate.free()
	if !free || d.gate.since(mark) {
		t.Fatal("the gate is not free after the join")
	}
	leave2, err := d.gate.enter("pmgcm update-fingerprints")
	if err != nil {
		t.Fatal(err)
	}
	defer leave2()
	if !d.gate.since(mark) {
		t.Error("a standing check does not see the renewal that began while it asked")
	}
}

// TestWaitAppliedWhileStopped: waitApplied on a stopped Raft node (a removed or fenced
// node, or one a join restarts) waits instead of failing at once, so the loops around it
// idle; the daemon closing Raft for good ends it.
func TestWaitAppliedWhileStopped(t *testing.T) {
	f := fsm.New()
	d := &Daemon{fsm: f, stop: make(chan struct{})}
	rc := raftnode.DefaultConfig()
	rc.Dir, rc.LocalID, rc.Address = t.TempDir(), "1", "127.0.0.1:1"
	n, err := raftnode.New(rc, f, func() raft.StreamLayer { return nopLayer{} })
	if err != nil {
		t.Fatal(err)
	}
	d.raftp.Store(n) // made, never opened: as a stopped node
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	err = d.waitApplied(ctx, 1)
	cancel()
	if !errors.Is(err, raftnode.ErrTimeout) {
		t.Fatalf("waitApplied on a stopped node: %v, want it to wait until its deadline", err)
	}
	done := make(chan error, 1)
	go func() { done <- d.waitApplied(context.Background(), 1) }()
	_ = n.Close()
	select {
	case err := <-done:
		if !errors.Is(err, raftnode.ErrClosed) {
			t.Fatalf("waitApplied at close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("waitApplied did not end when Raft was closed")
	}
}

// TestStandingWatchApply: a removal or fencing is recorded in node.json and stops Raft;
// a member's standing changes nothing; a kick never blocks.
func TestStandingWatchApply(t *testing.T) {
	var nf nodeFile
	stopped := 0
	w := &standingWatch{
		logger:     hclog.NewNullLogger(),
		updateSelf: func(change func(*nodeFile)) error { change(&nf); return nil },
		stopRaft:   func() { stopped++ },
		kick:       make(chan struct{}, 1),
	}
	if w.apply(standing{}, cluster.Membership{}) || stopped != 0 {
		t.Fatal("a member's standing changed something")
	}
	if !w.apply(removedFrom("c"), cluster.Membership{ClusterID: "c"}) || nf.Removed != "c" || stopped != 1 {
		t.Fatalf("removal: recorded %+v, raft stopped %d times", nf, stopped)
	}
	f := &fenceInfo{ClusterID: "c", Epoch: 2}
	if !w.apply(fencedBy(f), cluster.Membership{}) || nf.Fenced != f || nf.Removed != "" || stopped != 2 {
		t.Fatalf("fencing: recorded %+v, raft stopped %d times", nf, stopped)
	}
	w.kickNow()
	w.kickNow() // the second finds the first pending and returns
	var none *standingWatch
	none.kickNow() // before Open made it
}
