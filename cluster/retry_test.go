package cluster

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/internal/testutil"
	"github.com/pmgcm/pmgcm/raftnode"
)

// TestClassify: only a request provably not applied (never sent whole, or refused with
// an explicit not-master answer) or idempotent may be sent again.
func TestClassify(t *testing.T) {
	remote := func(code string, notSent bool) error {
		return fmt.Errorf("wrapped: %w", &RemoteError{Status: 503, NotSent: notSent, E: api.Error{Code: code, Message: code}})
	}
	cases := []struct {
		name       string
		err        error
		idempotent bool
		want       attemptResult
	}{
		{"answered", nil, false, attemptDone},
		{"local error", errors.New("encode"), false, attemptDone},
		{"refused dial", remote(api.CodeUnreachable, true), false, attemptNotSent},
		{"sent, no answer", remote(api.CodeUnreachable, false), false, attemptUnknown},
		{"sent, no answer, idempotent", remote(api.CodeUnreachable, false), true, attemptNotSent},
		{"not leader", remote(api.CodeNotLeader, false), false, attemptNotMaster},
		{"no quorum", remote(api.CodeNoQuorum, false), false, attemptNotMaster},
		{"shutting down", remote(api.CodeShuttingDown, false), false, attemptNotMaster},
		{"master's unknown outcome", remote(api.CodeUnknownOutcome, false), false, attemptDone},
		{"master's refusal", remote(api.CodeConflict, false), false, attemptDone},
	}
	for _, c := range cases {
		if got := classify(c.err, c.idempotent); got != c.want {
			t.Errorf("%s: classify = %d, want %d", c.name, got, c.want)
		}
	}
}

// countingRaft is a fakeRaft that counts the calls of LeaderChanged: one per round of
// CallLeader's loop.
type countingRaft struct {
	*fakeRaft
	rounds atomic.Int32
}

func (c *countingRaft) LeaderChanged() <-chan struct{} {
	c.rounds.Add(1)
	return c.fakeRaft.LeaderChanged()
}

// TestCallLeaderShuttingDownWaitsForNextMaster: a master that answers "shutting down"
// (it stops, it hands over) is not asked again while it is still the known master; the
// write goes to the next one as soon as it is known (LeaderChanged), without an error.
func TestCallLeaderShuttingDownWaitsForNextMaster(t *testing.T) {
	var oldCalls, newCalls atomic.Int32
	next := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		newCalls.Add(1)
		_, _ = w.Write([]byte(`{"index":7}`))
	}))
	defer next.Close()
	old := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		oldCalls.Add(1)
		testWriteErr(w, &RemoteError{Status: http.StatusServiceUnavailable, E: api.Error{Code: api.CodeShuttingDown, Message: "stopping"}})
	}))
	defer old.Close()
	r := &countingRaft{fakeRaft: newFakeRaft(strings.TrimPrefix(old.URL, "http://"))}
	f := NewForwarder(ForwarderConfig{Self: "127.0.0.1:1", Raft: r, Client: NewClient(&http.Client{}),
		HeartbeatTimeout: time.Second, ElectionWait: time.Minute})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- f.CallLeader(ctx, false, apply(f))
	}()
	testutil.Poll(t, "the old master asked", 5*time.Second, func() error {
		if oldCalls.Load() == 0 {
			return errors.New("not yet")
		}
		return nil
	})
	// A while passes with the old master still the known one (CallLeader waits for a
	// change of master, or the election's length, before it asks it again).
	from := r.rounds.Load()
	select {
	case err := <-done:
		t.Fatalf("CallLeader returned before the master changed: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	if n := r.rounds.Load() - from; n > 1 {
		t.Fatalf("%d rounds of CallLeader with no change of master: it polls", n)
	}
	if n := oldCalls.Load(); n != 1 {
		t.Fatalf("the master that said it is shutting down was asked %d times before the master changed", n)
	}
	r.set(strings.TrimPrefix(next.URL, "http://"))
	if err := <-done; err != nil {
		t.Fatalf("CallLeader across the stop of the master: %v", err)
	}
	if oldCalls.Load() != 1 || newCalls.Load() != 1 {
		t.Fatalf("calls: old master %d, new master %d; want 1 and 1", oldCalls.Load(), newCalls.Load())
	}
}

// TestCallLeaderUnknownOutcomeNotRetriedAfterChange: a write the master took whole and
// never answered is not sent to the next master either, even once one is elected.
func TestCallLeaderUnknownOutcomeNotRetriedAfterChange(t *testing.T) {
	var newCalls atomic.Int32
	next := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		newCalls.Add(1)
		_, _ = w.Write([]byte(`{"index":7}`))
	}))
	defer next.Close()
	r := newFakeRaft("")
	old := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		_, _ = req.Body.Read(make([]byte, 16)) // took it whole
		r.set(strings.TrimPrefix(next.URL, "http://"))
		c, _, _ := w.(http.Hijacker).Hijack() // and stopped without an answer
		_ = c.Close()
	}))
	defer old.Close()
	r.set(strings.TrimPrefix(old.URL, "http://"))
	f := newTestForwarder(r)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := f.CallLeader(ctx, false, apply(f))
	if !errors.Is(err, raftnode.ErrUnknownOutcome) || newCalls.Load() != 0 {
		t.Fatalf("a write sent and not answered: %v, %d calls to the next master", err, newCalls.Load())
	}
}

// TestCallNotSentAfterStop: a node that stopped after it answered (its pooled
// connection closed, nothing listens any more) yields NotSent: the request was never
// written whole anywhere.
func TestCallNotSentAfterStop(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(`{"index":1}`))
	}))
	addr := strings.TrimPrefix(srv.URL, "http://")
	c := NewClient(&http.Client{})
	if _, err := c.Apply(context.Background(), addr, []byte{1}); err != nil {
		t.Fatal(err)
	}
	srv.Close()
	_, err := c.Apply(context.Background(), addr, []byte{1})
	var re *RemoteError
	if !errors.As(err, &re) || re.E.Code != api.CodeUnreachable || !re.NotSent {
		t.Fatalf("a request to a stopped node: %#v", err)
	}
}
