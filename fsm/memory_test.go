package fsm

import (
	"bytes"
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"
)

// Memory bounds of the state (issue 16: resident memory at most twice the data). They
// measure the live heap after a full GC, which depends on what is kept, not on timing.

const (
	memTestEntries = 4000
	memTestValue   = 1024 // a size class boundary: the worst case for a decoded value
)

// liveHeap returns the bytes of live heap after a full collection.
func liveHeap() int64 {
	runtime.GC()
	runtime.GC() // the second cycle frees what the first one's finalizers released
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// memKey is the key of entry i.
func memKey(i int) string { return fmt.Sprintf("mem/%06d", i) }

// memData is the data of memTestEntries entries, as StateBytes counts it.
func memData() int64 { return int64(memTestEntries * (len(memKey(0)) + memTestValue)) }

// fillForMemory applies memTestEntries ConfigSets through Encode and Apply, as Raft
// delivers them.
func fillForMemory(t *testing.T) *harness {
	t.Helper()
	h := newHeapHarness(t)
	value := bytes.Repeat([]byte("v"), memTestValue)
	for i := 0; i < memTestEntries; i++ {
		h.must(ConfigSet{Key: memKey(i), Value: value})
	}
	if got, want := h.f.StateBytes(), memData(); got != want {
		t.Fatalf("StateBytes = %d, want %d", got, want)
	}
	return h
}

// maxStateHeap bounds the heap the state holds beyond the data: the entry map, the
// key strings, and the value allocations' rounding to size classes (none at 1,024 bytes).
// A value kept in its decoding buffer (1,152 bytes for 1,024) breaks it.
func maxStateHeap() int64 { return memData() + memData()/5 }

// TestStateHeapBoundedByData fails when the state keeps more than the data and a small
// per-entry overhead: values kept in oversized decoding buffers, copies kept per version,
// the encoded log entries retained.
func TestStateHeapBoundedByData(t *testing.T) {
	before := liveHeap()
	h := fillForMemory(t)
	held := liveHeap() - before
	runtime.KeepAlive(h.f)
	t.Logf("%d entries, %d bytes of data: the state holds %d bytes of heap (%.2fx)",
		memTestEntries, memData(), held, float64(held)/float64(memData()))
	if held > maxStateHeap() {
		t.Fatalf("the state holds %d bytes of heap for %d bytes of data, want at most %d",
			held, memData(), maxStateHeap())
	}
	if held < memData() {
		t.Fatalf("the state holds %d bytes of heap for %d bytes of data: the measure is broken", held, memData())
	}
}

// TestOverwritesKeepNoCopies: overwriting every entry (a new version of each) leaves the
// heap as one version would.
func TestOverwritesKeepNoCopies(t *testing.T) {
	before := liveHeap()
	h := fillForMemory(t)
	value := bytes.Repeat([]byte("w"), memTestValue)
	for i := 0; i < memTestEntries; i++ {
		h.must(ConfigSet{Key: memKey(i), Value: value})
	}
	held := liveHeap() - before
	runtime.KeepAlive(h.f)
	if held > maxStateHeap() {
		t.Fatalf("after an overwrite of every entry the state holds %d bytes for %d bytes of data, want at most %d",
			held, memData(), maxStateHeap())
	}
}

// TestSnapshotSharesValues: a snapshot waiting to be persisted copies the maps, not the
// values, and a state restored from one is as compact as the state it was taken from.
func TestSnapshotSharesValues(t *testing.T) {
	h := fillForMemory(t)
	before := liveHeap()
	snap, err := h.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	held := liveHeap() - before
	runtime.KeepAlive(snap)
	if limit := memData() / 10; held > limit {
		t.Fatalf("a pending snapshot holds %d bytes of heap for %d bytes of data, want at most %d (values copied?)",
			held, memData(), limit)
	}
	var sink testSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()

	before = liveHeap()
	f := New()
	if err := f.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	held = liveHeap() - before
	runtime.KeepAlive(f)
	if held > maxStateHeap() {
		t.Fatalf("a restored state holds %d bytes of heap for %d bytes of data, want at most %d",
			held, memData(), maxStateHeap())
	}
	if got := f.mustList("mem/"); len(got) != memTestEntries || !strings.HasPrefix(string(got[0].Value), "v") {
		t.Fatalf("restored %d entries, want %d", len(got), memTestEntries)
	}
}

// TestOwnValue: a value is kept in an allocation of its own length, never nil.
func TestOwnValue(t *testing.T) {
	if v := ownValue(nil); v == nil || len(v) != 0 {
		t.Fatalf("ownValue(nil) = %#v, want empty non-nil", v)
	}
	buf := make([]byte, 1026)
	copy(buf, "abc")
	v := ownValue(buf[:1024])
	if len(v) != 1024 || cap(v) != 1024 || &v[0] == &buf[0] || string(v[:3]) != "abc" {
		t.Fatalf("ownValue of a 1024-byte value in a 1026-byte buffer: len %d cap %d, shared %v", len(v), cap(v), &v[0] == &buf[0])
	}
	exact := make([]byte, 10)
	if v := ownValue(exact); &v[0] != &exact[0] {
		t.Fatal("ownValue copied a value already in a buffer of its length")
	}
}
