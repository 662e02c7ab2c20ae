package cluster

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/raftnode"
)

// lookupRaft is a fakeRaft that counts the lookups of the master (LeaderAddr).
type lookupRaft struct {
	*fakeRaft
	lookups atomic.Int32
}

func (l *lookupRaft) LeaderAddr() string {
	l.lookups.Add(1)
	return l.fakeRaft.LeaderAddr()
}

// TestCallLeaderWaitsForElectionEvent: while no master is known, CallLeader waits for
// Raft's leader observation (LeaderChanged) rather than looking again on a timer; once
// a master is elected the request goes to it at once.
func TestCallLeaderWaitsForElectionEvent(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		calls.Add(1)
		_, _ = w.Write([]byte(`{"index":7}`))
	}))
	defer srv.Close()
	r := &lookupRaft{fakeRaft: newFakeRaft("")}
	f := newTestForwarder(r)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- f.CallLeader(ctx, false, apply(f)) }()
	// The length of an election: a poll every 50 ms would look about ten times.
	select {
	case err := <-done:
		t.Fatalf("CallLeader returned with no master known: %v", err)
	case <-time.After(500 * time.Millisecond):
	}
	if n := r.lookups.Load(); n > 2 {
		t.Fatalf("CallLeader looked up the master %d times while no election ended; want it to wait for LeaderChanged", n)
	}
	start := time.Now()
	r.set(strings.TrimPrefix(srv.URL, "http://"))
	if err := <-done; err != nil {
		t.Fatalf("CallLeader once a master is elected: %v", err)
	}
	if calls.Load() != 1 || time.Since(start) > 5*time.Second {
		t.Fatalf("%d calls to the elected master, after %s", calls.Load(), time.Since(start))
	}
}

// TestCallLeaderNoMasterStillEnds: with no event ever, CallLeader still ends with ctx
// and reports the lost quorum.
func TestCallLeaderNoMasterStillEnds(t *testing.T) {
	r := &lookupRaft{fakeRaft: newFakeRaft("")}
	f := newTestForwarder(r)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := f.CallLeader(ctx, true, apply(f)); !errors.Is(err, raftnode.ErrNoLeader) {
		t.Fatalf("CallLeader with no master: %v", err)
	}
	if n := r.lookups.Load(); n > 2 {
		t.Fatalf("%d lookups of the master with no change of master", n)
	}
}

// TestWaitLeaderAddrWaitsForEvent: WaitLeaderAddr waits for LeaderChanged, and returns
// the master elected.
func TestWaitLeaderAddrWaitsForEvent(t *testing.T) {
	r := &lookupRaft{fakeRaft: newFakeRaft("")}
	f := newTestForwarder(r)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	type result struct {
		addr string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		addr, err := f.WaitLeaderAddr(ctx)
		done <- result{addr, err}
	}()
	select {
	case res := <-done:
		t.Fatalf("WaitLeaderAddr returned with no master known: %q, %v", res.addr, res.err)
	case <-time.After(500 * time.Millisecond):
	}
	if n := r.lookups.Load(); n > 2 {
		t.Fatalf("WaitLeaderAddr looked up the master %d times while no election ended", n)
	}
	r.set("127.0.0.9:5")
	if res := <-done; res.err != nil || res.addr != "127.0.0.9:5" {
		t.Fatalf("WaitLeaderAddr = %q, %v", res.addr, res.err)
	}
	short, cancel2 := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel2()
	r.set("")
	if _, err := f.WaitLeaderAddr(short); !errors.Is(err, raftnode.ErrNoLeader) {
		t.Fatalf("WaitLeaderAddr with no master until the deadline: %v", err)
	}
}
