package mailstore

import (
	"bytes"
	"errors"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// compactWorld is a store of origin 1 with a clock: two old messages (one released), a
// fresh one, and one more old one after it (imported).
type compactWorld struct {
	a                          *Store
	old1, old2, fresh, oldLate Meta
	cutoff                     time.Time
	now                        func() time.Time
}

func newCompactWorld(t *testing.T) *compactWorld {
	t.Helper()
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	var clock atomic.Int64
	clock.Store(t0.UnixNano())
	w := &compactWorld{cutoff: t0.Add(5 * 24 * time.Hour), now: func() time.Time { return time.Unix(0, clock.Load()) }}
	var cid atomic.Uint64
	cid.Store(1)
	w.a = openStore(t, t.TempDir(), &cid, w.now)
	w.old1 = accept(t, w.a, message("old1", 100))                     // event 1
	w.old2 = accept(t, w.a, message("old2", 100))                     // event 2
	if _, err := w.a.SetState(w.old2.ID, StateReleased); err != nil { // event 3
		t.Fatal(err)
	}
	clock.Store(t0.Add(10 * 24 * time.Hour).UnixNano())
	w.fresh = accept(t, w.a, message("fresh", 100)) // event 4
	var err error
	w.oldLate, err = w.a.Import("a@example.org", []string{"b@example.net"}, t0, bytes.NewReader(message("old3", 50))) // event 5
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// store opens another store of origin cid on the world's clock.
func (w *compactWorld) store(t *testing.T, cid uint64) *Store {
	var c atomic.Uint64
	c.Store(cid)
	return openStore(t, t.TempDir(), &c, w.now)
}

// keys counts the keys of bucket b.
func keys(t *testing.T, s *Store, b []byte) int {
	t.Helper()
	n := 0
	if err := s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(b).ForEach(func(_, _ []byte) error { n++; return nil })
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

func seqs(evs []Event) []uint64 {
	var out []uint64
	for _, e := range evs {
		out = append(out, e.Seq)
	}
	return out
}

// TestCompactDropsPurgedPrefix: after retention, the oldest run of events that concern
// purged messages only goes, with their tombstones; a live message stops it.
func TestCompactDropsPurgedPrefix(t *testing.T) {
	w := newCompactWorld(t)
	a := w.a
	if n, err := a.Compact(); err != nil || n != 0 {
		t.Fatalf("compact before any purge dropped %d (%v)", n, err)
	}
	if n, err := a.Purge(w.cutoff); err != nil || n != 3 {
		t.Fatalf("purge: %d %v", n, err)
	}
	if n, err := a.Compact(); err != nil || n != 3 {
		t.Fatalf("compact dropped %d events (%v), want 3: the live message (event 4) stops it", n, err)
	}
	if f := a.Floors(); !reflect.DeepEqual(f, Cursors{1: 3}) {
		t.Fatalf("floors %v", f)
	}
	if n := keys(t, a, bktEvents); n != 2 {
		t.Fatalf("%d events kept, want 2", n)
	}
	if n := keys(t, a, bktMeta); n != 2 { // fresh, and the tombstone of oldLate (event 5)
		t.Fatalf("%d records kept, want 2", n)
	}
	if n, err := a.Compact(); err != nil || n != 0 {
		t.Fatalf("compact again dropped %d (%v)", n, err)
	}
	// An asker from below the floor is told to skip to it.
	evs, skip, err := a.EventsFrom(nil, 0)
	if err != nil || !reflect.DeepEqual(seqs(evs), []uint64{4, 5}) || !reflect.DeepEqual(skip, Cursors{1: 3}) {
		t.Fatalf("EventsFrom(nil) = %v %v %v", seqs(evs), skip, err)
	}
	if _, skip, _ := a.EventsFrom(Cursors{1: 3}, 0); len(skip) != 0 {
		t.Fatalf("an asker at the floor is told to skip: %v", skip)
	}
	// A late state event for a compacted message leaves nothing behind.
	if _, err := a.ApplyEvent(Event{Origin: 9, Seq: 1, Kind: KindState, MsgID: w.old1.ID, State: StateDeleted}); err != nil {
		t.Fatal(err)
	}
	if n := keys(t, a, bktPending); n != 0 {
		t.Fatalf("a state for a compacted message was kept (%d pending)", n)
	}
	if _, err := a.Get(w.old1.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("compacted message: %v", err)
	}
	if l, _ := a.List(Filter{}); len(l) != 1 || l[0].ID != w.fresh.ID {
		t.Fatalf("list after compaction: %v", l)
	}

	// A new node (retention applied, like every node) skips to the floor and gets the
	// live message only.
	b := w.store(t, 2)
	if _, err := b.Purge(w.cutoff); err != nil {
		t.Fatal(err)
	}
	evs, skip, _ = a.EventsFrom(b.Heads(), 0)
	if err := b.SkipTo(skip); err != nil {
		t.Fatal(err)
	}
	need, err := b.ApplyEvents(evs)
	if err != nil || !reflect.DeepEqual(need, []string{w.fresh.ID}) {
		t.Fatalf("new node needs %v (%v)", need, err)
	}
	if h, f := b.Heads(), b.Floors(); h[1] != 5 || f[1] != 3 {
		t.Fatalf("new node: heads %v floors %v", h, f)
	}
}

// TestSkipToDropsOwnEvents: a node behind a peer's floor drops its own events below it
// and the states it kept for messages that never came; a message it still holds there
// stays until its own retention, which then leaves no tombstone.
func TestSkipToDropsOwnEvents(t *testing.T) {
	w := newCompactWorld(t)
	b := w.store(t, 2)
	evs, _ := w.a.EventsSince(nil, 0)
	if _, err := b.ApplyEvents(evs[:1]); err != nil { // old1 only
		t.Fatal(err)
	}
	// Another node's state for old2, which b has not got: kept pending.
	if _, err := b.ApplyEvent(Event{Origin: 9, Seq: 1, Kind: KindState, MsgID: w.old2.ID, State: StateDeleted}); err != nil {
		t.Fatal(err)
	}
	if n := keys(t, b, bktPending); n != 1 {
		t.Fatalf("%d pending", n)
	}
	if _, err := w.a.Purge(w.cutoff); err != nil {
		t.Fatal(err)
	}
	if _, err := w.a.Compact(); err != nil {
		t.Fatal(err)
	}
	evs, skip, _ := w.a.EventsFrom(b.Heads(), 0)
	if !reflect.DeepEqual(skip, Cursors{1: 3}) {
		t.Fatalf("skip %v", skip)
	}
	if err := b.SkipTo(skip); err != nil {
		t.Fatal(err)
	}
	if n := keys(t, b, bktPending); n != 0 {
		t.Fatalf("%d pending after the skip", n)
	}
	if h := b.Heads(); h[1] != 3 {
		t.Fatalf("heads %v", h)
	}
	if n := keys(t, b, bktEvents); n != 1 { // origin 9's event; origin 1's event 1 is gone
		t.Fatalf("%d events", n)
	}
	// b has not purged yet: old1 is still here.
	if _, err := b.Get(w.old1.ID); err != nil {
		t.Fatalf("old1 dropped before b's own retention: %v", err)
	}
	if _, err := b.ApplyEvents(evs); err != nil {
		t.Fatal(err)
	}
	// A third node asking b from scratch is told b's floor too.
	if _, skip, _ := b.EventsFrom(nil, 0); skip[1] != 3 {
		t.Fatalf("b's skip %v", skip)
	}
	m, _ := b.Stats()
	if n, err := b.Purge(w.cutoff); err != nil || n != 2 { // old1, and oldLate (event 5)
		t.Fatalf("purge on b: %d %v", n, err)
	}
	if _, err := b.Get(w.old1.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("old1 after b's retention: %v", err)
	}
	if after, _ := b.Stats(); after != m-2 {
		t.Fatalf("stats %d -> %d", m, after)
	}
	// old1 is below the floor: no tombstone; oldLate is not: a tombstone.
	if n := keys(t, b, bktMeta); n != 2 {
		t.Fatalf("%d records on b, want fresh and one tombstone", n)
	}
	// Skipping to a floor b is already past changes nothing.
	if err := b.SkipTo(Cursors{1: 2}); err != nil {
		t.Fatal(err)
	}
	if h := b.Heads(); h[1] != 5 {
		t.Fatalf("heads after a stale skip %v", h)
	}
}

// TestCompactInBatches: compaction works through more events than one transaction takes.
func TestCompactInBatches(t *testing.T) {
	defer func(n int) { compactBatch = n }(compactBatch)
	compactBatch = 2
	w := newCompactWorld(t)
	if _, err := w.a.Purge(w.cutoff); err != nil {
		t.Fatal(err)
	}
	if n, err := w.a.Compact(); err != nil || n != 3 {
		t.Fatalf("compact in batches of 2 dropped %d (%v), want 3", n, err)
	}
	if f := w.a.Floors(); f[1] != 3 {
		t.Fatalf("floors %v", f)
	}
}
