package fsm

import (
	"errors"
	"os"
	"strings"
	"testing"
)

// TestSpillFaultUntilSnapshot: a spilled value the disk does not give back (its file cut
// short, as a bad block reads) is recorded as a fault at the first failed read, told once
// however many reads fail, and counted; snapshots fail meanwhile. Once the bytes read
// again, the next written snapshot ends the fault, which is told once too.
func TestSpillFaultUntilSnapshot(t *testing.T) {
	h := newHarness(t)
	var faults, clears []string
	h.f.OnSpillFault(func(err error) { faults = append(faults, err.Error()) }, func() { clears = append(clears, "clear") })
	h.must(ConfigSet{Key: "a", Value: []byte("some value")})
	h.must(ConfigSet{Key: "b", Value: []byte("another value")})
	if _, ok, n := h.f.SpillFault(); ok || n != 0 {
		t.Fatalf("a fault before any failed read (%d reads)", n)
	}
	path, repair := cutSegment(t, h.f)
	for range 3 {
		if _, _, err := h.f.Get("b"); !errors.Is(err, ErrValueUnreadable) {
			t.Fatalf("Get of a value cut off: %v, want ErrValueUnreadable", err)
		}
	}
	snapFails := func() {
		t.Helper()
		snap, err := h.f.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		defer snap.Release()
		if err := snap.Persist(&testSink{}); !errors.Is(err, ErrValueUnreadable) {
			t.Fatalf("Persist with a value unreadable: %v", err)
		}
	}
	snapFails()
	fault, ok, total := h.f.SpillFault()
	if !ok || fault.Reads != 4 || total != 4 || fault.Since.IsZero() || !errors.Is(fault.Err, ErrValueUnreadable) ||
		!strings.Contains(fault.Err.Error(), path) {
		t.Fatalf("fault %+v (%v), %d reads in all; want the first failed read, 4 reads", fault, ok, total)
	}
	if len(faults) != 1 || len(clears) != 0 {
		t.Fatalf("told %d faults and %d clears, want 1 and 0", len(faults), len(clears))
	}

	repair()
	snap, err := h.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	sink := &testSink{}
	if err := snap.Persist(sink); err != nil || !sink.closed {
		t.Fatalf("Persist once the values read again: %v", err)
	}
	if _, ok, total := h.f.SpillFault(); ok || total != 4 {
		t.Fatalf("the fault outlived a written snapshot (ok=%v, %d reads in all)", ok, total)
	}
	if len(faults) != 1 || len(clears) != 1 {
		t.Fatalf("told %d faults and %d clears, want 1 and 1", len(faults), len(clears))
	}
	if e, ok := h.f.mustGet("b"); !ok || string(e.Value) != "another value" {
		t.Fatalf("b = %q after the repair", e.Value)
	}
}

// TestSpillFaultOutlivesOlderSnapshot: a snapshot taken before a read failed does not end
// the fault, even when it is written afterwards.
func TestSpillFaultOutlivesOlderSnapshot(t *testing.T) {
	h := newHarness(t)
	h.must(ConfigSet{Key: "a", Value: []byte("some value")})
	older, err := h.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer older.Release()
	_, repair := cutSegment(t, h.f)
	if _, _, err := h.f.Get("a"); !errors.Is(err, ErrValueUnreadable) {
		t.Fatalf("Get: %v", err)
	}
	repair()
	if err := older.Persist(&testSink{}); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := h.f.SpillFault(); !ok {
		t.Fatal("a snapshot taken before the failed read ended the fault")
	}
}

// TestSpillFaultEndsWithItsFile: a fault ends once the segment its reads failed in is
// gone (here after a Reset; a Restore and a compaction let go of it the same way), not
// while a snapshot still holds the segment.
func TestSpillFaultEndsWithItsFile(t *testing.T) {
	h := newHarness(t)
	clears := 0
	h.f.OnSpillFault(nil, func() { clears++ })
	h.must(ConfigSet{Key: "a", Value: []byte("some value")})
	cutSegment(t, h.f)
	if _, _, err := h.f.Get("a"); !errors.Is(err, ErrValueUnreadable) {
		t.Fatalf("Get: %v", err)
	}
	snap, err := h.f.Snapshot() // holds the bad segment
	if err != nil {
		t.Fatal(err)
	}
	h.f.Reset()
	if _, ok, _ := h.f.SpillFault(); !ok || clears != 0 {
		t.Fatalf("the fault ended while a snapshot holds its file (ok=%v, %d clears)", ok, clears)
	}
	snap.Release()
	if _, ok, total := h.f.SpillFault(); ok || total != 1 || clears != 1 {
		t.Fatalf("after the last holder let go: fault %v, %d failed reads in all, %d clears; want none, 1, 1", ok, total, clears)
	}
}

// cutSegment cuts f's live segment file short, as a bad block reads, and returns its path
// and a func that writes its bytes back.
func cutSegment(t *testing.T, f *FSM) (string, func()) {
	t.Helper()
	path := f.st.seg.path
	saved, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	return path, func() {
		t.Helper()
		if err := os.WriteFile(path, saved, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}
