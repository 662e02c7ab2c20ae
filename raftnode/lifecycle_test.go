package raftnode

import (
	"context"
	"errors"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/pmgcm/pmgcm/fsm"
)

// TestOpenQuickClose: Close right after Open, before the node's goroutines ran, neither
// panics nor races (run with -race).
func TestOpenQuickClose(t *testing.T) {
	dir := t.TempDir()
	for i := 0; i < 20; i++ {
		layer := newLayer(t)
		n, err := New(testConfig(dir, layer), fsm.New(), layer.Next)
		if err != nil {
			t.Fatal(err)
		}
		if err := n.Open(); err != nil {
			t.Fatal(err)
		}
		if err := n.Close(); err != nil {
			t.Fatalf("close %d: %v", i, err)
		}
	}
}

func waitLeader(t *testing.T, n *Node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestStopOpenInPlace: a stopped node answers ErrClosed to operations but keeps its
// waiters waiting (a removed node must idle, not spin on ErrClosed); opened again, the
// same *Node has its state back and the waiter is served.
func TestStopOpenInPlace(t *testing.T) {
	n, f := openNode(t, t.TempDir())
	waitLeader(t, n)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := n.Apply(ctx, fsm.ConfigSet{Key: "a", Value: []byte("1")})
	if err != nil || res.Err != nil {
		t.Fatalf("apply: %v %+v", err, res)
	}
	if err := n.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Apply(ctx, fsm.ConfigSet{Key: "b", Value: nil}); !errors.Is(err, ErrClosed) {
		t.Fatalf("apply on a stopped node = %v, want ErrClosed", err)
	}
	short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	err = n.WaitApplied(short, res.Index+1)
	cancelShort()
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("WaitApplied on a stopped node = %v, want it to wait until its context ends", err)
	}
	waited := make(chan error, 1)
	go func() { waited <- n.WaitApplied(ctx, res.Index+1) }()
	if err := n.Open(); err != nil {
		t.Fatal(err)
	}
	waitLeader(t, n)
	if e, ok, _ := f.Get("a"); !ok || string(e.Value) != "1" {
		t.Fatalf("after reopen entry = %+v %v", e, ok)
	}
	if _, err := n.Apply(ctx, fsm.ConfigSet{Key: "b", Value: []byte("2")}); err != nil {
		t.Fatal(err)
	}
	if err := <-waited; err != nil {
		t.Fatalf("waiter across the restart: %v", err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if err := n.Open(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Open after Close = %v, want ErrClosed", err)
	}
	if err := n.WaitApplied(ctx, 1<<40); !errors.Is(err, ErrClosed) {
		t.Fatalf("WaitApplied after Close = %v, want ErrClosed", err)
	}
}

// TestLeaderDutyPerTerm: a registered duty starts once per leadership term, after the
// barrier (the node is a ready leader when it runs), and its context ends with the term.
func TestLeaderDutyPerTerm(t *testing.T) {
	layer := newLayer(t)
	n, err := New(testConfig(t.TempDir(), layer), fsm.New(), layer.Next)
	if err != nil {
		t.Fatal(err)
	}
	var started, stopped atomic.Int32
	readyAtStart := make(chan bool, 4)
	n.OnLeader(func(ctx context.Context) {
		started.Add(1)
		_, err := n.ReadIndex(ctx)
		readyAtStart <- err == nil
		<-ctx.Done()
		stopped.Add(1)
	})
	if err := n.Open(); err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	waitLeader(t, n)
	if !<-readyAtStart {
		t.Fatal("the duty started before the term's barrier applied")
	}
	if err := n.Stop(); err != nil {
		t.Fatal(err)
	}
	if started.Load() != 1 || stopped.Load() != 1 {
		t.Fatalf("after one term: %d started, %d stopped; want 1 and 1 (Stop waits for the duties)", started.Load(), stopped.Load())
	}
	if err := n.Open(); err != nil {
		t.Fatal(err)
	}
	waitLeader(t, n)
	<-readyAtStart
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if started.Load() != 2 || stopped.Load() != 2 {
		t.Fatalf("after two terms: %d started, %d stopped", started.Load(), stopped.Load())
	}
}

// TestForceRecoverInPlace: a node whose configuration names a voter that will never come
// back has no quorum; ForceRecover makes it the single voter, on the same *Node, with
// every entry kept.
func TestForceRecoverInPlace(t *testing.T) {
	n, f := openNode(t, t.TempDir())
	waitLeader(t, n)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := n.Apply(ctx, fsm.ConfigSet{Key: "kept", Value: []byte("yes")})
	if err != nil || res.Err != nil {
		t.Fatalf("apply: %v %+v", err, res)
	}
	if err := n.AddVoter(ctx, 2, "127.0.0.1:1"); err != nil {
		t.Fatal(err)
	}
	// No quorum now: the node steps down and cannot elect itself.
	deadline := time.Now().Add(10 * time.Second)
	for n.IsLeader() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n.IsLeader() {
		t.Fatal("still leader of a 2-voter configuration with one voter missing")
	}
	if err := n.ForceRecover(); err != nil {
		t.Fatal(err)
	}
	waitLeader(t, n)
	if e, ok, _ := f.Get("kept"); !ok || string(e.Value) != "yes" {
		t.Fatalf("entry after recovery = %+v %v", e, ok)
	}
	cfg, err := n.Configuration()
	if err != nil || len(cfg.Servers) != 1 {
		t.Fatalf("configuration after recovery = %+v (%v)", cfg.Servers, err)
	}
}

// TestRestartAsJoiner: Restart with a new server ID, its Raft state removed by Prepare
// and no bootstrap, leaves the same *Node empty and waiting to be added to a cluster.
func TestRestartAsJoiner(t *testing.T) {
	n, f := openNode(t, t.TempDir())
	waitLeader(t, n)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := n.Apply(ctx, fsm.ConfigSet{Key: "old", Value: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	err := n.Restart(RestartOptions{LocalID: ServerID(7), Prepare: func(dir string) error { return os.RemoveAll(dir) }})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := f.Get("old"); ok {
		t.Fatal("the state machine kept the standalone node's entries")
	}
	if st := n.Stats(); st.State != "Follower" || st.Suffrage != "" || st.LastIndex != 0 {
		t.Fatalf("stats after restart as a joiner: %+v", st)
	}
	if n.localID() != "7" {
		t.Fatalf("local ID = %s", n.localID())
	}
}

// TestStopOpenFollowerRejoins: a follower stopped and opened again in place takes part
// in its cluster again (each run of Raft gets a fresh stream layer: raft closes its own
// when it stops).
func TestStopOpenFollowerRejoins(t *testing.T) {
	nodes := testCluster(t, 3, nil)
	f := nodes[2]
	if err := f.Stop(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := nodes[0].Apply(ctx, fsm.ConfigSet{Key: "while-stopped", Value: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Open(); err != nil {
		t.Fatal(err)
	}
	if err := f.WaitApplied(ctx, res.Index); err != nil {
		t.Fatalf("the reopened follower never caught up: %v", err)
	}
}

// recordingLayer records the timeout of each Dial.
type recordingLayer struct {
	tcpLayer
	got time.Duration
}

func (l *recordingLayer) Dial(_ raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	l.got = timeout
	return nil, errors.New("not dialing")
}

// TestDialTimeoutBound: raft dials with its RPC timeout (5 s); each new connection is
// bounded by Config.DialTimeout instead, so that vote RPCs stuck in TLS handshakes with
// hung peers end soon and raft's Shutdown (which waits for them) returns.
func TestDialTimeoutBound(t *testing.T) {
	rec := &recordingLayer{}
	b := boundedDial{StreamLayer: rec, max: 2 * time.Second}
	for _, tc := range []struct{ ask, want time.Duration }{
		{5 * time.Second, 2 * time.Second},
		{time.Second, time.Second},
		{0, 2 * time.Second},
	} {
		_, _ = b.Dial("127.0.0.1:1", tc.ask)
		if rec.got != tc.want {
			t.Errorf("Dial with %s dialed with %s, want %s", tc.ask, rec.got, tc.want)
		}
	}
}
