package fsm

import (
	"testing"
)

// TestRestoreConfig: a standalone node loads a backup in chunks, the first resetting the
// store; a member refuses it; a bad entry changes nothing.
func TestRestoreConfig(t *testing.T) {
	h := newHarness(t)
	h.must(ConfigSet{Key: "old/key", Value: []byte("dropped")})
	h.must(ConfigSet{Key: "bye", Value: []byte("x")})
	h.must(ConfigDelete{Key: "bye"})

	bad := RestoreConfig{Reset: true, Entries: []RestoredEntry{{Key: "ok", Value: []byte("1")}, {Key: "a/../b", Value: nil}}}
	wantErr(t, h.apply(bad).Err, ErrInvalidKey)
	if _, ok := h.f.mustGet("old/key"); !ok {
		t.Fatal("a refused restore changed the store")
	}

	first := h.must(RestoreConfig{Reset: true, Entries: []RestoredEntry{{Key: "a", Value: []byte("1")}, {Key: "b", Value: []byte{0, 1}}}})
	h.must(RestoreConfig{Entries: []RestoredEntry{{Key: "c", Value: []byte("3")}}})
	if _, ok := h.f.mustGet("old/key"); ok {
		t.Fatal("Reset kept an old entry")
	}
	idx, view := h.f.EntriesAt()
	entries := viewEntries(t, view)
	if idx != h.f.AppliedIndex() || len(entries) != 3 || entries[0].Key != "a" || entries[2].Key != "c" {
		t.Fatalf("EntriesAt = %d %+v", idx, entries)
	}
	if e, _ := h.f.mustGet("a"); e.Version != first.Index {
		t.Fatalf("restored entry version %d, want the command's index %d", e.Version, first.Index)
	}
	if _, reset := h.f.mustChanges("", 1); !reset {
		t.Fatal("a watcher from before the restore is not told to reset")
	}
	if got, want := h.f.StateBytes(), int64(len("a1")+len("b")+2+len("c3")); got != want {
		t.Fatalf("StateBytes = %d, want %d", got, want)
	}

	m := withCluster(t, 1)
	wantErr(t, m.apply(RestoreConfig{Reset: true}).Err, ErrClusterExists)
}
