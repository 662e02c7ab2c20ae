package mailstore

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/pmgcm/pmgcm/internal/testutil"
)

// The linger of background batches (group.go) and the feed's reads that do not wait
// for the intake journal (feed.go). The tests set a linger of an hour, so that
// whatever ends one early is the thing under test, never the clock.

// noop is a batch member that changes nothing; linger marks it background work.
func noop(linger bool) *commitReq {
	return &commitReq{apply: func(*bolt.Tx) error { return nil }, linger: linger}
}

// commitAsync runs groupCommit(r) on a goroutine; the channel gets its error.
func commitAsync(s *Store, r *commitReq) <-chan error {
	done := make(chan error, 1)
	go func() { done <- s.groupCommit(r) }()
	return done
}

// waitDone waits up to 10 s for every channel's error and fails t on one.
func waitDone(t *testing.T, what string, chans ...<-chan error) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for _, c := range chans {
		select {
		case err := <-c:
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
		case <-deadline:
			t.Fatalf("%s: not committed after 10 s", what)
		}
	}
}

// underLoad commits two background batches one right after the other: the store is
// then under load, and the next background batch lingers.
func underLoad(t *testing.T, s *Store) {
	t.Helper()
	waitDone(t, "first background request", commitAsync(s, noop(true)))
	waitDone(t, "second background request", commitAsync(s, noop(true)))
}

// stillQueued fails t when c is done within a moment: its request must be lingering.
func stillQueued(t *testing.T, what string, c <-chan error) {
	t.Helper()
	select {
	case err := <-c:
		t.Fatalf("%s committed at once (error %v); want it to linger", what, err)
	case <-time.After(200 * time.Millisecond):
	}
}

// TestBackgroundBatchLingers: a background request queued just after a batch waits
// for company, and a request with a client behind it ends the wait and takes it along.
// It fails when background requests commit at once.
func TestBackgroundBatchLingers(t *testing.T) {
	s := newStore(t, 1)
	s.setLinger(time.Hour)
	var mu sync.Mutex
	var sizes []int
	s.setCommitHook(func(n int) {
		mu.Lock()
		sizes = append(sizes, n)
		mu.Unlock()
	})

	// An idle store commits a lone background request at once, and the next one too:
	// one batch right after another is no load yet.
	waitDone(t, "first background request", commitAsync(s, noop(true)))
	waitDone(t, "second background request", commitAsync(s, noop(true)))
	second := commitAsync(s, noop(true))
	waitQueued(t, s, 1)
	stillQueued(t, "a background request right after a batch", second)
	third := commitAsync(s, noop(true))
	waitQueued(t, s, 2)
	stillQueued(t, "a second background request", third)
	waitDone(t, "a request with a client behind it", commitAsync(s, noop(false)))
	waitDone(t, "the lingering requests", second, third)
	mu.Lock()
	defer mu.Unlock()
	if len(sizes) != 3 || sizes[0] != 1 || sizes[1] != 1 || sizes[2] != 3 {
		t.Fatalf("batch sizes %v, want [1 1 3]", sizes)
	}
}

// TestLingerEndsAtMax: lingerMax queued background requests commit without waiting for
// the linger to run out (a joining node's fetchers must not all stand still).
func TestLingerEndsAtMax(t *testing.T) {
	s := newStore(t, 1)
	s.setLinger(time.Hour)
	underLoad(t, s)
	var chans []<-chan error
	for i := 0; i < lingerMax-1; i++ {
		chans = append(chans, commitAsync(s, noop(true)))
	}
	waitQueued(t, s, lingerMax-1)
	stillQueued(t, "lingerMax-1 background requests", chans[0])
	chans = append(chans, commitAsync(s, noop(true)))
	waitDone(t, "lingerMax background requests", chans...)
}

// TestReaderHurriesIndexAndFeedDoesNot: a journaled message's index entry is background
// work; a read that must see every acknowledged message (Get) ends the linger, the
// feed's reads (Feed, FeedHeads, FeedBody, BeginBody) serve what the index has committed
// without waiting and leave the linger alone. It fails when Get waits out the linger, or
// when the feed waits for the journal.
func TestReaderHurriesIndexAndFeedDoesNot(t *testing.T) {
	s := newStore(t, 1)
	s.setLinger(time.Hour)
	underLoad(t, s)
	m, err := s.Accept("a@example.org", []string{"b@example.net"}, bytes.NewReader(message("lingering", 100)))
	if err != nil {
		t.Fatal(err)
	}
	waitQueued(t, s, 1) // its index request, after indexDelay

	evs, _, heads, err := s.Feed(nil, 0)
	if err != nil || len(evs) != 0 || heads[1] != 0 {
		t.Fatalf("feed before the index commit: %d events, heads %v, error %v; want none", len(evs), heads, err)
	}
	if h := s.FeedHeads(); h[1] != 0 {
		t.Fatalf("feed heads before the index commit: %v", h)
	}
	if _, _, err := s.FeedBody(m.ID); err == nil {
		t.Fatal("FeedBody served a message the index has not committed")
	}
	if _, _, err := s.BeginBody(m.ID); err == nil {
		t.Fatal("BeginBody found a message the index has not committed")
	}
	// The feed's reads did not hurry it: still queued, and no hurry pending.
	s.gc.mu.Lock()
	q, hurried := len(s.gc.queue), s.gc.hurried
	s.gc.mu.Unlock()
	if q != 1 || hurried {
		t.Fatalf("after the feed's reads: %d requests queued, hurried %v; want 1, false", q, hurried)
	}

	got := make(chan error, 1)
	go func() {
		_, err := s.Get(m.ID)
		got <- err
	}()
	waitDone(t, "Get of a message whose index entry lingers", got)
	evs, _, heads, err = s.Feed(nil, 0)
	if err != nil || len(evs) != 1 || evs[0].MsgID != m.ID || heads[1] != 1 {
		t.Fatalf("feed after the index commit: %v, heads %v, error %v; want the message's event", evs, heads, err)
	}
	f, _, err := s.FeedBody(m.ID)
	if err != nil {
		t.Fatal(err)
	}
	_ = f.Close()
}

// TestCloseEndsLingerAndStatusDoesNotHurry: the reads of status and the sweeper
// (MissingTotals, Missing) leave a linger alone, and Close ends it: the lingering
// request gets its answer at once (ErrClosed, the store closing first) instead of when
// its linger runs out. It fails when those reads hurry, or when Close does not (the
// request then waits an hour).
func TestCloseEndsLingerAndStatusDoesNotHurry(t *testing.T) {
	s := newStore(t, 1)
	s.setLinger(time.Hour)
	underLoad(t, s)
	lingering := commitAsync(s, noop(true))
	waitQueued(t, s, 1)
	if _, _, err := s.MissingTotals(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Missing(); err != nil {
		t.Fatal(err)
	}
	s.gc.mu.Lock()
	q, hurried := len(s.gc.queue), s.gc.hurried
	s.gc.mu.Unlock()
	if q != 1 || hurried {
		t.Fatalf("after MissingTotals and Missing: %d requests queued, hurried %v; want 1, false", q, hurried)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-lingering:
		if err != nil && !errors.Is(err, ErrClosed) {
			t.Fatalf("the lingering request at Close: %v, want nil or ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the lingering request still waits 10 s after Close")
	}
}

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
// first released it, finds the good file in place and adopts it (commitReceived). The
// record already says held: the file must stay. It fails when the adoption removes it.
func TestCommitBodyKeepsHeldBody(t *testing.T) {
	a, b := newStore(t, 1), newStore(t, 2)
	m := accept(t, a, message("held", 1000))
	replicate(t, a, b)
	copyBody(t, a, b, m.ID)
	if err := b.commitReceived(m.ID); err != nil {
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
