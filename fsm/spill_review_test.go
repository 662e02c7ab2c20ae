package fsm

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"
)

// spillDirBytes is the total size of the segment files of f's spill directory.
func spillDirBytes(t *testing.T, f *FSM) int64 {
	t.Helper()
	var n int64
	for _, p := range segFiles(t, f) {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		n += fi.Size()
	}
	return n
}

// A halted FSM refuses every entry and never compacts: it must not write the values of
// the entries it refuses, or its spill files grow with the log for as long as it waits
// for an upgrade.
func TestSpillHaltedWritesNothing(t *testing.T) {
	h := newHarness(t)
	h.must(ConfigSet{Key: "a", Value: bytes.Repeat([]byte("x"), 100)})
	res := h.applyRaw([]byte{EncodingVersion, 200, '{', '}'})
	if !errors.Is(res.Err, ErrHalted) {
		t.Fatalf("unknown command: %v", res.Err)
	}
	before := spillDirBytes(t, h.f)
	for range 50 {
		res := h.apply(ConfigSet{Key: "b", Value: bytes.Repeat([]byte("y"), 1000)})
		if !errors.Is(res.Err, ErrHalted) {
			t.Fatalf("entry after the halt: %v", res.Err)
		}
	}
	if after := spillDirBytes(t, h.f); after != before {
		t.Fatalf("spill files grew from %d to %d bytes while halted", before, after)
	}
}

// Values of exactly 63 and 64 bytes and empty values give the same snapshot, hash and
// StateBytes at the production threshold as in the heap, also through a RestoreConfig
// with Reset and a refused command.
func TestSpillThresholdEdgesMatchHeap(t *testing.T) {
	spill := &harness{t: t, f: New()}
	if err := spill.f.SpillTo(t.TempDir(), func(err error) { t.Errorf("spill: %v", err) }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(spill.f.Close)
	heap := newHeapHarness(t)
	cmds := []Command{
		ConfigSet{Key: "e", Value: []byte{}},
		ConfigSet{Key: "v63", Value: bytes.Repeat([]byte("a"), 63)},
		ConfigSet{Key: "v64", Value: bytes.Repeat([]byte("b"), 64)},
		ConfigSet{Key: "v64", Value: bytes.Repeat([]byte("c"), 65), IfVersion: u64(99)}, // refused
		RestoreConfig{Reset: true, Entries: []RestoredEntry{
			{Key: "r0", Value: []byte{}}, {Key: "r63", Value: bytes.Repeat([]byte("d"), 63)},
			{Key: "r64", Value: bytes.Repeat([]byte("e"), 64)}}},
		ConfigSet{Key: "r64", Value: []byte{}},
		ConfigDelete{Key: "r63"},
	}
	for _, c := range cmds {
		a, b := spill.apply(c), heap.apply(c)
		if (a.Err == nil) != (b.Err == nil) || a.Version != b.Version {
			t.Fatalf("%T: spill %+v, heap %+v", c, a, b)
		}
	}
	if spill.f.st.spilled == 0 && spill.f.st.seg == nil {
		t.Fatal("nothing was spilled: the test does not test spilling")
	}
	if a, b := spill.f.StateBytes(), heap.f.StateBytes(); a != b {
		t.Fatalf("StateBytes: spill %d, heap %d", a, b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ha, err := spill.f.HashAt(ctx, spill.idx)
	if err != nil {
		t.Fatal(err)
	}
	hb, err := heap.f.HashAt(ctx, heap.idx)
	if err != nil {
		t.Fatal(err)
	}
	if ha != hb {
		t.Fatalf("hash: spill %+v, heap %+v", ha, hb)
	}
	var sa, sb testSink
	for _, x := range []struct {
		f    *FSM
		sink *testSink
	}{{spill.f, &sa}, {heap.f, &sb}} {
		snap, err := x.f.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		if err := snap.Persist(x.sink); err != nil {
			t.Fatal(err)
		}
		snap.Release()
	}
	if !bytes.Equal(sa.Bytes(), sb.Bytes()) {
		t.Fatalf("snapshots differ:\n%s\n%s", sa.Bytes(), sb.Bytes())
	}
}

// Every holder lets go of the segment: after snapshots (released), hashes (served,
// timed out, restored away), views, Gets, Changes and a failed Restore, Close leaves no
// file and the segment no reference.
func TestSpillRefsBalance(t *testing.T) {
	lowCompaction(t, 1)
	h := newHarness(t)
	for i := range 20 {
		h.must(ConfigSet{Key: "k" + string(rune('a'+i%5)), Value: bytes.Repeat([]byte{byte('a' + i)}, 200)})
	}
	seg := h.f.st.seg
	if seg == nil {
		t.Fatal("no segment")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := h.f.HashAt(ctx, h.idx); err != nil {
		t.Fatal(err)
	}
	short, cancel2 := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel2()
	if _, err := h.f.HashAt(short, h.idx+100); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("HashAt of a far index: %v", err)
	}
	snap, err := h.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink testSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	snap.Release() // twice is harmless
	v := h.f.ListShared("")
	viewEntries(t, v)
	v.Close()
	h.f.mustGet("ka")
	h.f.mustChanges("", 0)
	if got := h.f.st.seg.refs.Load(); got != 1 {
		t.Fatalf("live segment refs = %d, want 1", got)
	}
	// A failed Restore (truncated snapshot) leaves the live state and its segment alone.
	bad := sink.Bytes()[:len(sink.Bytes())-10]
	if err := h.f.Restore(io.NopCloser(bytes.NewReader(bad))); err == nil {
		t.Fatal("truncated snapshot restored")
	}
	if got := h.f.st.seg.refs.Load(); got != 1 {
		t.Fatalf("live segment refs after a failed restore = %d, want 1", got)
	}
	if n := len(segFiles(t, h.f)); n != 1 {
		t.Fatalf("%d segment files after a failed restore, want 1", n)
	}
	// A waiting hash restored away gets no clone to leak.
	done := make(chan error, 1)
	go func() {
		_, err := h.f.HashAt(ctx, h.idx-1+1000)
		done <- err
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		h.f.mu.RLock()
		n := len(h.f.hashReqs)
		h.f.mu.RUnlock()
		if n > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if err := h.f.Restore(io.NopCloser(strings.NewReader(sink.String()))); err != nil {
		t.Fatal(err)
	}
	h.f.Reset()
	h.f.Close()
	cancel()
	<-done
	if left := segFiles(t, h.f); len(left) != 0 {
		t.Fatalf("segment files left after Close: %v", left)
	}
	if got := seg.refs.Load(); got != 0 {
		t.Fatalf("first segment refs = %d, want 0", got)
	}
}

// A SpillTo that fails (the daemon then goes on, values in the heap) leaves the FSM as
// New made it: it applies and snapshots with every value in the heap.
func TestSpillToFailureKeepsHeap(t *testing.T) {
	file := t.TempDir() + "/not-a-dir"
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	h := newHeapHarness(t)
	if err := h.f.SpillTo(file, nil); err == nil {
		t.Fatal("SpillTo on a regular file succeeded")
	}
	h.must(ConfigSet{Key: "a", Value: bytes.Repeat([]byte("v"), 500)})
	if h.f.sp != nil || h.f.st.seg != nil || h.f.st.entries["a"].spilled() {
		t.Fatal("a failed SpillTo left the FSM spilling")
	}
	if e, ok := h.f.mustGet("a"); !ok || len(e.Value) != 500 {
		t.Fatalf("Get after a failed SpillTo: %+v %v", e, ok)
	}
}

// A snapshot taken before compactions persists, after them, the same bytes as the same
// state kept in the heap: its clone holds the old segment open after the live state has
// moved on (no closed file read, no value lost), and Release then removes that file.
func TestSpillSnapshotAcrossCompactions(t *testing.T) {
	lowCompaction(t, 4<<10)
	spill, heap := newHarness(t), newHeapHarness(t)
	both := func(c Command) {
		a, b := spill.apply(c), heap.apply(c)
		if a.Err != nil || b.Err != nil {
			t.Fatalf("%T: %v / %v", c, a.Err, b.Err)
		}
	}
	for i := range 20 {
		both(ConfigSet{Key: "k/x" + strings.Repeat("x", i), Value: bytes.Repeat([]byte{byte('a' + i)}, 300+i)})
	}
	snapS, err := spill.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	snapH, err := heap.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	first := spill.f.st.seg
	seq := spill.f.sp.seq
	for i := range 200 {
		both(ConfigSet{Key: "k/x" + strings.Repeat("x", i%20), Value: bytes.Repeat([]byte{byte('A' + i%26)}, 400)})
	}
	if spill.f.sp.seq < seq+3 || spill.f.st.seg == first {
		t.Fatalf("no compaction ran (segments %d -> %d)", seq, spill.f.sp.seq)
	}
	var a, b testSink
	if err := snapS.Persist(&a); err != nil {
		t.Fatalf("persist after compactions: %v", err)
	}
	if err := snapH.Persist(&b); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatal("the snapshot of the spilling FSM differs from the heap one after compactions")
	}
	if _, err := os.Stat(first.path); err != nil {
		t.Fatalf("the snapshot's segment is gone before Release: %v", err)
	}
	snapS.Release()
	snapH.Release()
	if _, err := os.Stat(first.path); !os.IsNotExist(err) {
		t.Fatalf("the snapshot's segment outlives its Release: %v", err)
	}
	if n := len(segFiles(t, spill.f)); n != 1 {
		t.Fatalf("%d segment files after Release, want 1 (the live one)", n)
	}
}

// A compaction that failed is retried later on its own segment only: after a Restore
// the new segment compacts at the usual threshold, not at the old one's retry point.
func TestSpillRetryPointIsPerSegment(t *testing.T) {
	lowCompaction(t, 1<<10)
	dir := t.TempDir()
	f := New()
	var errs []error
	if err := f.SpillTo(dir, func(err error) { errs = append(errs, err) }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	h := &harness{t: t, f: f}
	val := func(i int) []byte { return bytes.Repeat([]byte{byte('a' + i%26)}, 2<<10) }
	h.must(ConfigSet{Key: "a", Value: val(0)})
	// No new segment can be made: every compaction fails, pushing its retry point on.
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 20; i++ {
		h.must(ConfigSet{Key: "a", Value: val(i)})
	}
	if len(errs) == 0 || f.sp.retryAt < 30<<10 {
		t.Fatalf("compactions did not fail as set up: errs %v, retry at %d", errs, f.sp.retryAt)
	}
	var sink testSink
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := f.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	restored := f.st.seg
	if restored == nil || !f.st.entries["a"].spilled() {
		t.Fatal("the restored value was not spilled")
	}
	for i := 21; i <= 23; i++ { // 6 KiB dead over 2 KiB live: past the usual threshold
		h.must(ConfigSet{Key: "a", Value: val(i)})
	}
	if f.st.seg == restored {
		t.Fatalf("the restored segment was not compacted (%d dead bytes, old retry point %d)",
			f.st.seg.end.Load()-f.st.spilled, f.sp.retryAt)
	}
}
