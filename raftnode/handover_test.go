package raftnode

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/fsm"
	"github.com/pmgcm/pmgcm/internal/testutil"
)

// slowElections are Raft timers long enough that a leader elected after them is easy to
// tell from one handed leadership: followers of a silent leader wait a heartbeat
// timeout (2 s here) and more before they stand.
func slowElections(cfg *Config) {
	cfg.HeartbeatTimeout = 2 * time.Second
	cfg.ElectionTimeout = 2 * time.Second
	cfg.LeaderLeaseTimeout = time.Second
}

// testCluster starts n in-process nodes on 127.0.0.1, node 1 bootstrapped and leading,
// the others added as voters.
func testCluster(t *testing.T, size int, tune func(*Config)) []*Node {
	t.Helper()
	var nodes []*Node
	for i := 1; i <= size; i++ {
		layer := newLayer(t)
		cfg := testConfig(t.TempDir(), layer)
		cfg.LocalID = ServerID(uint64(i))
		cfg.Bootstrap = i == 1
		// Timers that a loaded 2-core machine does not trip (the race detector, other
		// packages' tests): the 100 ms of testConfig lost leadership right after forming.
		cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout = 500*time.Millisecond, 500*time.Millisecond, 250*time.Millisecond
		if tune != nil {
			tune(&cfg)
		}
		n, err := New(cfg, fsm.New(), layer.Next)
		if err != nil {
			t.Fatal(err)
		}
		if err := n.Open(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = n.Close() })
		nodes = append(nodes, n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := nodes[0].WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	for i, n := range nodes[1:] {
		if err := nodes[0].AddVoter(ctx, uint64(i+2), string(n.cfg.Address)); err != nil {
			t.Fatal(err)
		}
	}
	// One write through the first node, asked again while leadership settles: a write
	// lost to a leadership change is answered ErrUnknownOutcome (rewriting k is harmless).
	var res *fsm.Result
	testutil.Poll(t, "a write through node 1", 30*time.Second, func() error {
		var err error
		res, err = nodes[0].Apply(ctx, fsm.ConfigSet{Key: "k", Value: []byte("v")})
		return err
	})
	for _, n := range nodes {
		if err := n.WaitApplied(ctx, res.Index); err != nil {
			t.Fatal(err)
		}
	}
	return nodes
}

// leaderOf polls the nodes (with a deadline) until one of them other than skip leads.
func leaderOf(t *testing.T, nodes []*Node, skip *Node, within time.Duration) (*Node, time.Duration) {
	t.Helper()
	start := time.Now()
	var leader *Node
	err := testutil.WaitEvery(context.Background(), "a leader among the other nodes", within, 5*time.Millisecond, testutil.Cond(func() bool {
		for _, n := range nodes {
			if n != skip && n.IsLeader() {
				leader = n
				return true
			}
		}
		return false
	}))
	if err != nil {
		t.Fatal(err)
	}
	return leader, time.Since(start)
}

// TestCloseHandsLeadershipOver: Close on the leader of a 3-node cluster hands leadership
// to another voter before Raft stops, so a new leader is there at once, without the
// followers waiting out their heartbeat timeout (2 s here) for an election.
func TestCloseHandsLeadershipOver(t *testing.T) {
	nodes := testCluster(t, 3, slowElections)
	old := nodes[0]
	start := time.Now()
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	closeTook := time.Since(start)
	next, after := leaderOf(t, nodes, old, 10*time.Second)
	t.Logf("Close took %s; new leader %s %s after Close returned", closeTook, next.localID(), after)
	if closeTook > handoverTimeout+time.Second {
		t.Fatalf("Close took %s: the handover is bounded by %s", closeTook, handoverTimeout)
	}
	if closeTook+after >= 2*time.Second {
		t.Fatalf("a new leader came %s after Close began: an election after the heartbeat timeout, not a handover", closeTook+after)
	}
	// The new leader serves writes.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := next.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := next.Apply(ctx, fsm.ConfigSet{Key: "after", Value: []byte("x")}); err != nil {
		t.Fatal(err)
	}
}

// TestCloseSingleNodeJustStops: a single voter has nobody to hand over to: Close stops
// at once.
func TestCloseSingleNodeJustStops(t *testing.T) {
	layer := newLayer(t)
	cfg := testConfig(t.TempDir(), layer)
	slowElections(&cfg)
	cfg.HeartbeatTimeout, cfg.ElectionTimeout = 100*time.Millisecond, 100*time.Millisecond
	cfg.LeaderLeaseTimeout = 50 * time.Millisecond
	n, err := New(cfg, fsm.New(), layer.Next)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Open(); err != nil {
		t.Fatal(err)
	}
	waitLeader(t, n)
	start := time.Now()
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("Close of a single node took %s", took)
	}
}

// TestCloseFollowerNoHandover: a follower's Close does not disturb the leader.
func TestCloseFollowerNoHandover(t *testing.T) {
	nodes := testCluster(t, 3, nil)
	before := nodes[0].LeaderChanges()
	if err := nodes[2].Close(); err != nil {
		t.Fatal(err)
	}
	if !nodes[0].IsLeader() || nodes[0].LeaderChanges() != before {
		t.Fatalf("closing a follower moved leadership (leader %v, changes %d -> %d)", nodes[0].IsLeader(), before, nodes[0].LeaderChanges())
	}
}

// TestAbandonNoHandover: a leader that abandons Raft (it was removed or fenced) hands
// leadership to nobody. With 2 s heartbeat timeouts, a handover makes a follower leader
// within milliseconds, an election only after the heartbeat timeout: so no follower may
// observe a new leader (its Raft leader observation, LeaderChanges) in the first second
// after Abandon. The test waits on the followers' leader-change events, not by polling,
// and it cannot pass by watching nothing: node 1 led and the followers followed it
// before, and the same observation is seen once the followers elect a leader after the
// window.
func TestAbandonNoHandover(t *testing.T) {
	nodes := testCluster(t, 3, slowElections)
	old, followers := nodes[0], nodes[1:] // three nodes: two followers, watched below
	oldAddr, _ := old.Leader()
	if !old.IsLeader() || oldAddr == "" {
		t.Fatal("node 1 does not lead: there is nothing to hand over")
	}
	before := make([]uint64, len(followers))
	changed := make([]<-chan struct{}, len(followers))
	for i, n := range followers {
		changed[i] = n.LeaderChanged()
		before[i] = n.LeaderChanges()
		if addr, _ := n.Leader(); addr != oldAddr {
			t.Fatalf("%s follows %q, not node 1 (%s)", n.localID(), addr, oldAddr)
		}
	}
	newLeader := func(i int) bool { return followers[i].LeaderChanges() > before[i] }

	start := time.Now()
	if err := old.Abandon(); err != nil {
		t.Fatal(err)
	}
	window := time.NewTimer(time.Second - time.Since(start))
	defer window.Stop()
	for open := true; open; {
		var i int
		select {
		case <-changed[0]:
		case <-changed[1]:
			i = 1
		case <-window.C:
			open = false
			i = -1
		}
		for j := range followers {
			if newLeader(j) {
				addr, _ := followers[j].Leader()
				t.Fatalf("%s saw a new leader (%q) %s after the leader abandoned Raft: it handed leadership over",
					followers[j].localID(), addr, time.Since(start))
			}
		}
		if i >= 0 {
			// No leader, the start of an election: watch for the next observation.
			changed[i] = followers[i].LeaderChanged()
		}
	}

	// The observation the window watched for comes with the election after it.
	testutil.Poll(t, "a follower elected leader after the heartbeat timeout", 30*time.Second, func() error {
		for j, n := range followers {
			if n.IsLeader() && newLeader(j) {
				return nil
			}
		}
		return errors.New("no follower leads yet, or it has not observed its own leadership")
	})
	// It can be opened again (a re-admission restarts it in place).
	if err := old.Open(); err != nil {
		t.Fatal(err)
	}
}

// TestTransferToStoppedNodeFails: a leadership transfer whose target cannot win (it is
// stopped) fails with ErrTransferFailed, which callers may ask again, and leadership stays.
func TestTransferToStoppedNodeFails(t *testing.T) {
	nodes := testCluster(t, 3, nil)
	target := nodes[2]
	addr := string(target.cfg.Address)
	if err := target.Close(); err != nil {
		t.Fatal(err)
	}
	err := nodes[0].TransferLeadership(3, addr)
	if !errors.Is(err, ErrTransferFailed) {
		t.Fatalf("transfer to a stopped node: %v, want ErrTransferFailed", err)
	}
	if errors.Is(err, ErrNotLeader) || errors.Is(err, ErrUnknownOutcome) {
		t.Fatalf("transfer failure %v also matches another sentinel", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := nodes[0].Apply(ctx, fsm.ConfigSet{Key: "after", Value: []byte("x")}); err != nil {
		t.Fatalf("write after the failed transfer: %v", err)
	}
}
