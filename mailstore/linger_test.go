package mailstore

import (
	"bytes"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
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
