package cluster

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/internal/testutil"
	"github.com/pmgcm/pmgcm/raftnode"
)

// gatedBatchServer is newBatchServer with a master whose every Apply waits until the
// returned function is called (it is also called at cleanup, before the server closes,
// so that no handler is left waiting).
func gatedBatchServer(t *testing.T) (*batchHandler, *countingMux, *Batcher, func()) {
	t.Helper()
	h := &batchHandler{applied: map[string]int{}, gate: make(chan struct{})}
	cm, b := newBatchServer(t, NewService(h, testWriteErr).RPC())
	var once sync.Once
	open := func() { once.Do(func() { close(h.gate) }) }
	t.Cleanup(open) // runs before newBatchServer's srv.Close
	return h, cm, b, open
}

func appliedCount(h *batchHandler, key string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.applied[key]
}

// TestBatchedWriteDeadlineAfterSend: a batched write whose caller's deadline passes
// while the master holds its batch (it took the request and has not answered) gets
// "unknown outcome", never ErrTimeout, which would let the write be sent again while
// the master may still apply it; and it is not sent again alone.
func TestBatchedWriteDeadlineAfterSend(t *testing.T) {
	h, cm, b, open := gatedBatchServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 600*time.Millisecond)
	defer cancel()
	_, err := b.Apply(ctx, encodeSet(t, "k", []byte("v")))
	if !errors.Is(err, raftnode.ErrUnknownOutcome) || errors.Is(err, raftnode.ErrTimeout) {
		t.Fatalf("a write whose batch the master held past the deadline: %v, want unknown outcome", err)
	}
	if got := cm.n(PathApplyBatch); got != 1 {
		t.Fatalf("%d batch requests, want 1", got)
	}
	open()
	testutil.Poll(t, "the held batch applied by the master", 10*time.Second, testutil.Cond(func() bool {
		return appliedCount(h, "k") == 1
	}))
	if got := cm.n(PathApply); got != 0 {
		t.Errorf("%d single requests after a batch the master took, want 0", got)
	}
}

// TestBatchedWriteGivesUpAfterTaken: a caller that gives up (its context ends) once its
// command is in a batch the master holds is answered at once, by the Batcher itself, with
// "unknown outcome": the batch is on its way and may be applied.
func TestBatchedWriteGivesUpAfterTaken(t *testing.T) {
	_, cm, b, _ := gatedBatchServer(t)
	// No deadline: the batch runs for batchTimeout, so the answer comes from Apply's own
	// ending context, not from the batch's.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		_, err := b.Apply(ctx, encodeSet(t, "k", []byte("v")))
		errc <- err
	}()
	testutil.Poll(t, "the batch at the master", 10*time.Second, testutil.Cond(func() bool {
		return cm.n(PathApplyBatch) == 1
	}))
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, raftnode.ErrUnknownOutcome) || errors.Is(err, raftnode.ErrTimeout) ||
			!strings.Contains(err.Error(), "sent to the master in a batch") {
			t.Fatalf("a write that gave up with its batch at the master: %v, want unknown outcome (sent in a batch)", err)
		}
	case <-time.After(batchTimeout / 2):
		t.Fatal("a write whose context ended waited for its batch")
	}
}

// TestQueuedWriteDeadlineNotSent: a write whose deadline passes while it still waits in
// the queue (the batches in flight are held by the master) gets ErrTimeout, not
// "unknown outcome", and leaves the queue: it is never sent, and the write queued after
// it goes in the next batch alone (a batch that held the timed-out write too would end
// at that write's deadline, already past). The same for a caller that gives up
// (cancels) in the queue, whose write has no deadline of its own to stop it.
func TestQueuedWriteDeadlineNotSent(t *testing.T) {
	for _, c := range []struct {
		name string
		ctx  func() (context.Context, context.CancelFunc)
	}{
		{"deadline", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 300*time.Millisecond)
		}},
		{"cancelled", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(300*time.Millisecond, cancel)
			return ctx, cancel
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			h, cm, b, open := gatedBatchServer(t)
			var wg sync.WaitGroup
			errs := make([]error, maxBatchesInFlight+1)
			apply := func(i int) {
				defer wg.Done()
				_, errs[i] = b.Apply(context.Background(), encodeSet(t, string(rune('a'+i)), []byte("v")))
			}
			for i := range maxBatchesInFlight {
				wg.Add(1)
				go apply(i)
			}
			testutil.Poll(t, "every batch slot in flight", 10*time.Second, testutil.Cond(func() bool {
				b.mu.Lock()
				defer b.mu.Unlock()
				return b.inFlight == maxBatchesInFlight
			}))

			ctx, cancel := c.ctx()
			defer cancel()
			_, err := b.Apply(ctx, encodeSet(t, "queued", []byte("v")))
			if !errors.Is(err, raftnode.ErrTimeout) || errors.Is(err, raftnode.ErrUnknownOutcome) {
				t.Fatalf("a write that gave up in the queue: %v, want ErrTimeout (not sent)", err)
			}
			b.mu.Lock()
			left := len(b.queue)
			b.mu.Unlock()
			if left != 0 {
				t.Fatalf("%d writes left in the queue after the queued one gave up, want 0", left)
			}

			wg.Add(1)
			go apply(maxBatchesInFlight) // queued behind the held batches, as the one that gave up was
			testutil.Poll(t, "the next write queued", 10*time.Second, testutil.Cond(func() bool {
				b.mu.Lock()
				defer b.mu.Unlock()
				return len(b.queue) == 1
			}))
			open()
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Fatalf("write %d: %v", i, err)
				}
			}
			// A batch of the write that gave up would have been started before the
			// others were answered (send starts the next batch first): it is in flight
			// now, or done and applied. inFlight is read first: a batch ends after the
			// master applied it.
			b.mu.Lock()
			inFlight, queued := b.inFlight, len(b.queue)
			b.mu.Unlock()
			if inFlight != 0 || queued != 0 {
				t.Fatalf("after the last write: %d batches in flight, %d writes queued, want none (the write that gave up sent later?)", inFlight, queued)
			}
			if n := appliedCount(h, "queued"); n != 0 {
				t.Fatalf("the write that gave up in the queue was applied %d time(s)", n)
			}
			if got, single := cm.n(PathApplyBatch), cm.n(PathApply); got != maxBatchesInFlight+1 || single != 0 {
				t.Fatalf("%d batch and %d single requests, want %d batches (one per write answered)", got, single, maxBatchesInFlight+1)
			}
		})
	}
}

// TestBatchedWriteTooLateNotSent: a write whose deadline is nearer than its batch's
// margin (batchAnswerMargin) when a batch could take it is not sent, and answered
// ErrTimeout at its deadline, not "no quorum" (the verdict of a batch that ended before
// it started, with the master there all along).
func TestBatchedWriteTooLateNotSent(t *testing.T) {
	h := &batchHandler{applied: map[string]int{}}
	cm, b := newBatchServer(t, NewService(h, testWriteErr).RPC())
	ctx, cancel := context.WithTimeout(context.Background(), batchAnswerMargin/2)
	defer cancel()
	_, err := b.Apply(ctx, encodeSet(t, "late", []byte("v")))
	if !errors.Is(err, raftnode.ErrTimeout) || errors.Is(err, raftnode.ErrNoLeader) || errors.Is(err, raftnode.ErrUnknownOutcome) {
		t.Fatalf("a write with less than the batch margin left: %v, want ErrTimeout (not sent)", err)
	}
	if got := cm.n(PathApplyBatch) + cm.n(PathApply); got != 0 || appliedCount(h, "late") != 0 {
		t.Fatalf("%d requests for a write too late to send, want none", got)
	}
	// The master is there: a write with time left goes through.
	if _, err := b.Apply(context.Background(), encodeSet(t, "k", []byte("v"))); err != nil {
		t.Fatalf("a write after the late one: %v", err)
	}
}

// TestNoBatchPathTooLateNotSent: the master answers the batch path with 404 (a build
// without it) while a write waits in the queue; by then the write has less than the
// batch margin left, so it is not sent alone either: ErrTimeout ("not sent"), not "no
// quorum", and the master never gets it. The writes of the batches are sent alone.
func TestNoBatchPathTooLateNotSent(t *testing.T) {
	h := &batchHandler{applied: map[string]int{}}
	gate := make(chan struct{})
	var once sync.Once
	open := func() { once.Do(func() { close(gate) }) }
	t.Cleanup(open)
	old := http.NewServeMux() // a build without the batch path, slow to say so
	old.Handle("POST "+PathApply, NewService(h, testWriteErr).RPC())
	old.HandleFunc("POST "+PathApplyBatch, func(w http.ResponseWriter, _ *http.Request) {
		<-gate
		http.NotFound(w, nil)
	})
	cm, b := newBatchServer(t, old)

	var wg sync.WaitGroup
	errs := make([]error, maxBatchesInFlight)
	for i := range maxBatchesInFlight {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = b.Apply(context.Background(), encodeSet(t, string(rune('a'+i)), []byte("v")))
		}()
	}
	testutil.Poll(t, "every batch slot in flight", 10*time.Second, testutil.Cond(func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.inFlight == maxBatchesInFlight
	}))
	deadline := time.Now().Add(batchAnswerMargin + 100*time.Millisecond)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	late := make(chan error, 1)
	go func() {
		_, err := b.Apply(ctx, encodeSet(t, "late", []byte("v")))
		late <- err
	}()
	testutil.Poll(t, "the late write queued", 10*time.Second, testutil.Cond(func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return len(b.queue) == 1
	}))
	// The master answers once the queued write has less than the margin left.
	<-time.After(time.Until(deadline.Add(-batchAnswerMargin / 2)))
	open()
	if err := <-late; !errors.Is(err, raftnode.ErrTimeout) || errors.Is(err, raftnode.ErrNoLeader) || errors.Is(err, raftnode.ErrUnknownOutcome) {
		t.Fatalf("the late write: %v, want ErrTimeout (not sent)", err)
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	if n := appliedCount(h, "late"); n != 0 {
		t.Fatalf("the late write was applied %d time(s)", n)
	}
	if got := cm.n(PathApply); got != maxBatchesInFlight {
		t.Fatalf("%d single requests, want %d (the batches' writes alone)", got, maxBatchesInFlight)
	}
}
