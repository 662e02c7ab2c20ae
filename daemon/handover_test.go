package daemon

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/pmgcm/pmgcm/fsm"
	"github.com/pmgcm/pmgcm/internal/testutil"
	"github.com/pmgcm/pmgcm/raftnode"
)

// TestHaltedMasterHandsOver: the master whose state machine halts (a log entry this
// build cannot apply) hands mastership over at once, not at the duty's next turn, and a
// halted node that becomes master again hands over at the start of that term.
func TestHaltedMasterHandsOver(t *testing.T) {
	rt := roundTrip(func(*http.Request) (*http.Response, error) { return nil, errors.New("no peers in this test") })
	d := leaderDaemon(t, rt, testMember(1, fsm.Voter))
	d.tools.loaded = true // in service: no maintenance file
	d.versions = newVersionKeeper(d)
	d.versions.watchHalt()
	var handovers atomic.Int32
	handOver := func(context.Context) (uint64, error) {
		handovers.Add(1)
		return 2, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		newMaintenance(d).handoverDuty(ctx, handOver)
	}()
	// The master meets an entry it cannot apply.
	res := d.fsm.Apply(&raft.Log{Type: raft.LogCommand, Index: d.fsm.AppliedIndex() + 1,
		Data: []byte{fsm.EncodingVersion, 200, '{', '}'}}).(*fsm.Result)
	if !errors.Is(res.Err, fsm.ErrHalted) {
		t.Fatalf("test setup: the state machine did not halt: %v", res.Err)
	}
	start := time.Now()
	testutil.Poll(t, "the halted master's handover", handoverEvery/2, func() error {
		if handovers.Load() == 0 {
			return errors.New("no handover yet")
		}
		return nil
	})
	t.Logf("handed over %s after the halt", time.Since(start))
	cancel()
	<-done

	// A new term of the halted node: it hands over at its start.
	before := handovers.Load()
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	go newMaintenance(d).handoverDuty(ctx2, handOver)
	testutil.Poll(t, "the handover at the start of a halted term", handoverEvery/2, func() error {
		if handovers.Load() == before {
			return errors.New("no handover yet")
		}
		return nil
	})
}

// TestHaltedMasterHandsOverToVoter: in a two-voter Raft, the master whose state machine
// halted hands leadership to the other voter (without the voter policy's suffrage
// record, which it could not apply).
func TestHaltedMasterHandsOverToVoter(t *testing.T) {
	rt := roundTrip(func(r *http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: http.StatusOK, Header: http.Header{}, Request: r,
			Body: io.NopCloser(strings.NewReader(`{"cid":2,"applied_index":5}`))}, nil
	})
	d, n2, _ := twoVoters(t, rt)
	d.tools.loaded = true
	d.promoter = newPromoter(d)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res := d.fsm.Apply(&raft.Log{Type: raft.LogCommand, Index: d.fsm.AppliedIndex() + 1,
		Data: []byte{fsm.EncodingVersion, 200, '{', '}'}}).(*fsm.Result)
	if !errors.Is(res.Err, fsm.ErrHalted) {
		t.Fatalf("test setup: the state machine did not halt: %v", res.Err)
	}
	d.stat = newStatusReporter(d)
	mt := newMaintenance(d)
	go mt.handoverDuty(ctx, mt.handOver)
	testutil.Poll(t, "cid 2 master", 15*time.Second, func() error {
		if !n2.IsLeader() {
			return errors.New("cid 2 is not the leader")
		}
		return nil
	})
}

// steadyTimers are Raft timers that a loaded 2-core machine (the race detector, other
// packages' tests) does not trip: with 100 ms, a two-voter Raft lost its leader for
// longer than an election at times.
func steadyTimers(rc *raftnode.Config) {
	rc.HeartbeatTimeout, rc.ElectionTimeout, rc.LeaderLeaseTimeout = 500*time.Millisecond, 500*time.Millisecond, 250*time.Millisecond
}

// twoVoters is leaderDaemon (cid 1, leading, answered by rt) with a second voter: a
// Raft node of cid 2, on 127.0.0.2, with its own state machine, caught up with cid 1.
// Both run steadyTimers.
func twoVoters(t *testing.T, rt http.RoundTripper) (*Daemon, *raftnode.Node, fsm.Member) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	layer := tcpLayer{ln}
	host, port, _ := net.SplitHostPort(ln.Addr().String())
	p, _ := strconv.Atoi(port)
	two := testMember(2, fsm.Voter)
	two.IP, two.Port = host, p
	d := leaderDaemonOf(t, rt, testCreate(), steadyTimers, testMember(1, fsm.Voter), two)

	rc := raftnode.DefaultConfig()
	rc.Dir, rc.LocalID, rc.Address = t.TempDir(), "2", raft.ServerAddress(ln.Addr().String())
	steadyTimers(&rc)
	f2 := fsm.New()
	n2, err := raftnode.New(rc, f2, func() raft.StreamLayer { return layer })
	if err != nil {
		t.Fatal(err)
	}
	if err := n2.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n2.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := d.rn().AddVoter(ctx, 2, memberAddr(two)); err != nil {
		t.Fatal(err)
	}
	testutil.Poll(t, "cid 2 caught up", 10*time.Second, func() error {
		if f2.AppliedIndex() < d.fsm.AppliedIndex() {
			return errors.New("behind")
		}
		return nil
	})
	return d, n2, two
}
