package mailstore

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/internal/testutil"
)

// TestIndexRetryHurried: a reader waits for a journaled record whose index commit
// failed; the retry queues the record again (retryIndex) after a background batch took
// the reader's hurry. The retried request must not linger: the reader is still
// waiting. It fails (the Get waits out the linger, an hour here) when the retry does
// not hurry.
func TestIndexRetryHurried(t *testing.T) {
	old := indexRetryBase
	indexRetryBase = 2 * time.Second // after the background batch below, even on a loaded machine
	t.Cleanup(func() { indexRetryBase = old })
	s := newStore(t, 13)
	s.setLinger(time.Hour)
	var fails atomic.Int32
	s.jr.failIndex = func() error {
		if fails.Add(1) == 1 {
			return errors.New("transient (test)")
		}
		return nil
	}
	m, err := s.Accept("a@example.org", []string{"b@example.net"}, bytes.NewReader(message("retried", 100)))
	if err != nil {
		t.Fatal(err)
	}
	testutil.Poll(t, "the first index attempt failed", 10*time.Second, func() error {
		s.jr.mu.Lock()
		defer s.jr.mu.Unlock()
		if s.jr.retryTimer == nil {
			return fmt.Errorf("no retry due (%d attempts)", fails.Load())
		}
		return nil
	})
	got := make(chan error, 1)
	go func() {
		_, err := s.Get(m.ID)
		got <- err
	}()
	testutil.Poll(t, "the reader hurried", 10*time.Second, func() error {
		s.gc.mu.Lock()
		defer s.gc.mu.Unlock()
		if !s.gc.hurried {
			return errors.New("not hurried yet")
		}
		return nil
	})
	// A received body or a peer's events commit meanwhile: their batch takes the hurry.
	waitDone(t, "a background request", commitAsync(s, noop(true)))
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(indexRetryBase + 10*time.Second):
		t.Fatal("Get still waits for the retried index commit: it lingers with a reader waiting")
	}
}

// TestCommitBodyKeepsHeldBody: a second fetch of a body, whose BeginBody read the index
// before the first fetch's commit (HaveBody false) and took the body's lock after the
// first released it, finds the good file in place and adopts it (commitBody). The
// record already says held: the file must stay. It fails when commitBody removes it.
func TestCommitBodyKeepsHeldBody(t *testing.T) {
	a, b := newStore(t, 1), newStore(t, 2)
	m := accept(t, a, message("held", 1000))
	replicate(t, a, b)
	copyBody(t, a, b, m.ID)
	if err := b.commitBody(m.ID); err != nil {
		t.Fatal(err)
	}
	got, err := b.Get(m.ID)
	if err != nil || !got.HaveBody {
		t.Fatalf("after the second commit: %+v, %v", got, err)
	}
	f, _, err := b.OpenBody(m.ID)
	if err != nil {
		t.Fatalf("the index says held, but the body is gone: %v", err)
	}
	_ = f.Close()
}

// TestQuietReplicaCommitsBodyAtOnce: on a quiet node, a received body's commit comes a
// few milliseconds after the batch of the events that brought it, and the same events
// come again from a second peer (each node serves every origin's events). Neither may
// make the body wait out a linger (an hour here): the node is not under load. It fails
// when the body's batch lingers after one batch, or when events already applied cost a
// batch of their own.
func TestQuietReplicaCommitsBodyAtOnce(t *testing.T) {
	a, b := newStore(t, 1), newStore(t, 2)
	b.setLinger(time.Hour)
	var batches atomic.Int32
	b.setCommitHook(func(int) { batches.Add(1) })
	m := accept(t, a, message("quiet", 1000))
	evs, err := a.EventsSince(nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	apply := func(want int) <-chan error {
		done := make(chan error, 1)
		go func() {
			need, err := b.ApplyEvents(evs)
			if err == nil && len(need) != want {
				err = fmt.Errorf("need %v, want %d", need, want)
			}
			done <- err
		}()
		return done
	}
	waitDone(t, "apply", apply(1))
	waitDone(t, "apply again (a second peer)", apply(0))
	if n := batches.Load(); n != 1 {
		t.Fatalf("%d batches for the events and their copy, want 1", n)
	}
	done := make(chan error, 1)
	go func() {
		f, _, err := a.OpenBody(m.ID)
		if err != nil {
			done <- err
			return
		}
		defer f.Close()
		w, _, err := b.BeginBody(m.ID)
		if err != nil {
			done <- err
			return
		}
		if _, err := io.Copy(w, f); err != nil {
			done <- err
			return
		}
		done <- w.Commit()
	}()
	waitDone(t, "the body's commit on a quiet node", done)
}
