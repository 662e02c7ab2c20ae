package cluster

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/raftnode"
)

// fakeRaft is a Leadership whose master the test sets.
type fakeRaft struct {
	mu      sync.Mutex
	leader  string
	changed chan struct{}
}

func newFakeRaft(leader string) *fakeRaft {
	return &fakeRaft{leader: leader, changed: make(chan struct{})}
}

func (f *fakeRaft) IsLeader() bool { return false }
func (f *fakeRaft) LeaderAddr() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.leader
}
func (f *fakeRaft) LeaderChanged() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changed
}
func (f *fakeRaft) SinceLeaderContact() time.Duration { return 0 }
func (f *fakeRaft) set(leader string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.leader = leader
	close(f.changed)
	f.changed = make(chan struct{})
}

func newTestForwarder(r Leadership) *Forwarder {
	return NewForwarder(ForwarderConfig{Self: "127.0.0.1:1", Raft: r, Client: NewClient(&http.Client{}),
		HeartbeatTimeout: time.Second, ElectionWait: 300 * time.Millisecond})
}

func apply(f *Forwarder) func(context.Context, string) error {
	return func(ctx context.Context, addr string) error {
		_, err := f.Client().Apply(ctx, addr, []byte{1})
		return err
	}
}

// TestCallLeaderSelf: a node that is the master itself is told so.
func TestCallLeaderSelf(t *testing.T) {
	f := newTestForwarder(newFakeRaft("127.0.0.1:1"))
	if err := f.CallLeader(context.Background(), false, apply(f)); !errors.Is(err, ErrSelfLeader) {
		t.Fatalf("CallLeader on the master: %v", err)
	}
}

// TestCallLeaderNoMaster: with no master until the deadline, the lost quorum is reported.
func TestCallLeaderNoMaster(t *testing.T) {
	f := newTestForwarder(newFakeRaft(""))
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := f.CallLeader(ctx, false, apply(f)); !errors.Is(err, raftnode.ErrNoLeader) || !strings.Contains(err.Error(), "pmgcm promote") {
		t.Fatalf("CallLeader without a master: %v", err)
	}
}

// TestCallLeaderNotLeaderRetried: an answer "not leader" means not applied: the request
// goes to the next master.
func TestCallLeaderNotLeaderRetried(t *testing.T) {
	var calls atomic.Int32
	r := newFakeRaft("")
	second := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		calls.Add(1)
		_, _ = w.Write([]byte(`{"index":5}`))
	}))
	defer second.Close()
	first := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		calls.Add(1)
		testWriteErr(w, &RemoteError{Status: http.StatusServiceUnavailable, E: api.Error{Code: api.CodeNotLeader, Message: "no"}})
	}))
	defer first.Close()
	r.set(strings.TrimPrefix(first.URL, "http://"))
	f := newTestForwarder(r)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := f.CallLeader(ctx, false, func(ctx context.Context, addr string) error {
		err := apply(f)(ctx, addr)
		if addr == strings.TrimPrefix(first.URL, "http://") {
			r.set(strings.TrimPrefix(second.URL, "http://")) // the election after the refusal
		}
		return err
	})
	if err != nil || calls.Load() != 2 {
		t.Fatalf("CallLeader: %v after %d calls", err, calls.Load())
	}
}

// TestCallLeaderUnknownOutcome: a write the master took without answering is not sent
// again (unknown outcome); an idempotent request is.
func TestCallLeaderUnknownOutcome(t *testing.T) {
	var calls atomic.Int32
	var ok atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		calls.Add(1)
		if ok.Load() {
			_, _ = w.Write([]byte(`{"index":5}`))
			return
		}
		// Took it and dropped the connection without an answer; the next one is answered
		// (set first: once the connection is closed, the test may reset it).
		ok.Store(true)
		c, _, _ := w.(http.Hijacker).Hijack()
		_ = c.Close()
	}))
	defer srv.Close()
	f := newTestForwarder(newFakeRaft(strings.TrimPrefix(srv.URL, "http://")))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := f.CallLeader(ctx, false, apply(f))
	if !errors.Is(err, raftnode.ErrUnknownOutcome) || !UnknownOutcome(err) || calls.Load() != 1 {
		t.Fatalf("a write without answer: %v after %d calls", err, calls.Load())
	}
	ok.Store(false)
	calls.Store(0)
	if err := f.CallLeader(ctx, true, apply(f)); err != nil || calls.Load() != 2 {
		t.Fatalf("an idempotent request without answer: %v after %d calls", err, calls.Load())
	}
}

// TestCallLeaderNotSentRetried: a master that cannot be reached at all (no connection
// made) is retried even for a write, until one answers.
func TestCallLeaderNotSentRetried(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	_ = ln.Close() // nothing listens there now
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(`{"index":5}`))
	}))
	defer srv.Close()
	r := newFakeRaft(dead)
	f := newTestForwarder(r)
	var tries atomic.Int32
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = f.CallLeader(ctx, false, func(ctx context.Context, addr string) error {
		if tries.Add(1) == 2 {
			r.set(strings.TrimPrefix(srv.URL, "http://"))
		}
		return apply(f)(ctx, addr)
	})
	if err != nil || tries.Load() < 2 {
		t.Fatalf("CallLeader past an unreachable master: %v after %d tries", err, tries.Load())
	}
}

// TestOnMasterForwards: a node that is not the master forwards; a local operation that
// lost leadership before proposing goes to the master.
func TestOnMasterForwards(t *testing.T) {
	f := newTestForwarder(newFakeRaft("127.0.0.1:2"))
	out, err := OnMaster(context.Background(), f, func() (int, error) { return 1, nil }, func() (int, error) { return 2, nil })
	if err != nil || out != 2 {
		t.Fatalf("OnMaster on a follower: %d, %v", out, err)
	}
	for _, e := range []error{raftnode.ErrNotLeader, raftnode.ErrNoLeader} {
		if !errors.Is(FirstProposal(e), ErrLostMaster) {
			t.Errorf("FirstProposal(%v) does not let the operation go to the master", e)
		}
	}
	for _, e := range []error{nil, raftnode.ErrUnknownOutcome, raftnode.ErrTimeout} {
		if errors.Is(FirstProposal(e), ErrLostMaster) {
			t.Errorf("FirstProposal(%v) lets the operation be sent again", e)
		}
	}
}
