package fsm

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// lowCompaction makes compactions start at min dead bytes for one test.
func lowCompaction(t *testing.T, min int64) {
	old := compactMinDead
	compactMinDead = min
	t.Cleanup(func() { compactMinDead = old })
}

// segFiles lists the segment files of f's spill directory.
func segFiles(t *testing.T, f *FSM) []string {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(f.sp.dir, "*.seg"))
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// spillValue is a value for key at step i, of a size picked by rnd: empty, small (kept
// in the heap at the default threshold), 1 KiB, or up to 8 KiB.
func spillValue(rnd *rand.Rand, key string, i int) []byte {
	head := fmt.Sprintf("%s@%d;", key, i)
	var n int
	switch rnd.IntN(4) {
	case 0:
		return []byte{}
	case 1:
		n = rnd.IntN(spillMin)
	case 2:
		n = 1024
	default:
		n = rnd.IntN(8 << 10)
	}
	v := []byte(head + strings.Repeat("x", max(0, n-len(head))))
	v[len(v)-1] = byte(rnd.IntN(256))
	return v
}

// TestSpillMatchesHeap applies the same random writes, deletes and restores to an FSM
// that keeps its values in the heap and to one that spills them with compactions
// lowered to a few KiB, and checks every read, the snapshot bytes and the state hash
// agree, including a snapshot taken before compactions and persisted after them, and a
// restore of the spilled snapshot into a spilling FSM.
func TestSpillMatchesHeap(t *testing.T) {
	lowCompaction(t, 16<<10)
	heap := newHeapHarness(t)
	sp := &harness{t: t, f: New()}
	if err := sp.f.SpillTo(t.TempDir(), func(err error) { t.Errorf("spill: %v", err) }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sp.f.Close)
	rnd := rand.New(rand.NewPCG(1, 16))
	both := func(c Command) {
		a, b := heap.apply(c), sp.apply(c)
		if fmt.Sprint(a.Err) != fmt.Sprint(b.Err) || a.Version != b.Version {
			t.Fatalf("%T: heap %+v, spilled %+v", c, a, b)
		}
	}
	// Snapshots of the spilled FSM, persisted at the end: the heap's bytes then and theirs.
	var held []func() (want, got string)
	for i := range 1500 {
		key := fmt.Sprintf("k/%02d", rnd.IntN(40))
		switch r := rnd.IntN(100); {
		case r < 70:
			both(ConfigSet{Key: key, Value: spillValue(rnd, key, i)})
		case r < 90:
			both(ConfigDelete{Key: key})
		case r < 93:
			var es []RestoredEntry
			for j := range rnd.IntN(5) {
				k := fmt.Sprintf("r/%d", j)
				es = append(es, RestoredEntry{Key: k, Value: spillValue(rnd, k, i)})
			}
			both(RestoreConfig{Reset: rnd.IntN(2) == 0, Entries: es})
		case r < 95:
			snap, err := sp.f.Snapshot()
			if err != nil {
				t.Fatal(err)
			}
			want := persist(t, heap.f)
			held = append(held, func() (string, string) {
				defer snap.Release()
				sink := &testSink{}
				if err := snap.Persist(sink); err != nil {
					t.Fatal(err)
				}
				return want, sink.String()
			})
		default:
			if a, b := viewOf(heap.f), viewOf(sp.f); fmt.Sprint(a) != fmt.Sprint(b) {
				t.Fatalf("step %d: views differ:\nheap    %v\nspilled %v", i, a, b)
			}
			ca, ra := heap.f.mustChanges("k/", uint64(i/2))
			cb, rb := sp.f.mustChanges("k/", uint64(i/2))
			if fmt.Sprint(ca, ra) != fmt.Sprint(cb, rb) {
				t.Fatalf("step %d: changes differ", i)
			}
			checkInvariants(t, sp.f)
		}
	}
	for i, p := range held {
		if want, got := p(); want != got {
			t.Fatalf("snapshot %d of the spilled FSM, persisted after later compactions, differs from the heap's", i)
		}
	}
	if persist(t, heap.f) != persist(t, sp.f) {
		t.Fatal("the snapshots differ")
	}
	ha, err := heap.f.HashAt(context.Background(), heap.idx)
	if err != nil {
		t.Fatal(err)
	}
	hb, err := sp.f.HashAt(context.Background(), sp.idx)
	if err != nil {
		t.Fatal(err)
	}
	if ha != hb {
		t.Fatalf("hashes differ: heap %+v, spilled %+v", ha, hb)
	}
	if len(held) == 0 {
		t.Fatal("no snapshot was taken: the test is broken")
	}

	// Restored into a spilling FSM, the snapshot reads back the same.
	again := spillingFSM(t)
	if err := restore(again, persist(t, sp.f)); err != nil {
		t.Fatal(err)
	}
	if a, b := viewOf(heap.f), viewOf(again); fmt.Sprint(a) != fmt.Sprint(b) {
		t.Fatal("the restored spilling FSM reads differently")
	}
	checkInvariants(t, again)
	if n := len(segFiles(t, again)); n != 1 {
		t.Fatalf("the restored FSM has %d segment files, want 1", n)
	}
	if sp.f.sp.seq < 3 {
		t.Fatalf("%d segments were made: the compactions this test is about did not run", sp.f.sp.seq)
	}
}

// TestSpillCompactionBoundsFiles: overwriting the same keys keeps the files within about
// twice the live values plus the compaction threshold; a snapshot holds its segment
// until released, and Close removes the last file.
func TestSpillCompactionBoundsFiles(t *testing.T) {
	const minDead = 64 << 10
	lowCompaction(t, minDead)
	h := newHarness(t)
	value := func(i int) []byte { return bytes.Repeat([]byte{byte('a' + i%26)}, 1000) }
	for i := range 100 {
		h.must(ConfigSet{Key: fmt.Sprintf("k/%d", i), Value: value(i)})
	}
	snap, err := h.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	for round := range 20 {
		for i := range 100 {
			h.must(ConfigSet{Key: fmt.Sprintf("k/%d", i), Value: value(i + round)})
		}
		if end, live := h.f.st.seg.end.Load(), h.f.st.spilled; end > 2*live+minDead+1000 {
			t.Fatalf("round %d: the segment holds %d bytes for %d live", round, end, live)
		}
	}
	files := segFiles(t, h.f)
	if len(files) != 2 {
		t.Fatalf("segment files with a snapshot held: %v, want the snapshot's and the live one", files)
	}
	sink := &testSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(sink.String(), `"value":"`+base64.StdEncoding.EncodeToString(value(0))+`"`) {
		t.Fatal("the held snapshot lost its values to a compaction")
	}
	snap.Release()
	if files := segFiles(t, h.f); len(files) != 1 {
		t.Fatalf("segment files after the release: %v, want the live one", files)
	}
	if e, _ := h.f.mustGet("k/7"); !bytes.Equal(e.Value, value(7+19)) {
		t.Fatalf("k/7 = %.10q..., want the last round's", e.Value)
	}
	h.f.Close()
	if files := segFiles(t, h.f); len(files) != 0 {
		t.Fatalf("segment files after Close: %v", files)
	}
}

// TestSpillReadersDuringCompaction reads while writes and compactions go on: every
// value read is one that was written for its key (run with -race).
func TestSpillReadersDuringCompaction(t *testing.T) {
	lowCompaction(t, 32<<10)
	h := newHarness(t)
	val := func(key string, i int) []byte {
		return []byte(fmt.Sprintf("%s@%d;%s", key, i, strings.Repeat("y", 900)))
	}
	check := func(e Entry) error {
		if !bytes.HasPrefix(e.Value, []byte(e.Key+"@")) || len(e.Value) < 900 {
			return fmt.Errorf("%s = %.20q", e.Key, e.Value)
		}
		return nil
	}
	for i := range 50 {
		k := fmt.Sprintf("k/%d", i)
		h.must(ConfigSet{Key: k, Value: val(k, 0)})
	}
	stop := make(chan struct{})
	errs := make(chan error, 4)
	var wg sync.WaitGroup
	read := func(fn func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := fn(); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	read(func() error {
		e, ok, err := h.f.Get("k/3")
		if err != nil || !ok {
			return fmt.Errorf("Get: %v %v", ok, err)
		}
		return check(e)
	})
	read(func() error {
		v := h.f.ListShared("k/")
		defer v.Close()
		for i := range v.Len() {
			e, err := v.At(i)
			if err != nil {
				return err
			}
			if err := check(e); err != nil {
				return err
			}
		}
		return nil
	})
	read(func() error {
		cs, _, err := h.f.Changes("k/", 0)
		for _, c := range cs {
			if err == nil {
				err = check(Entry{Key: c.Key, Value: c.Value})
			}
		}
		return err
	})
	for i := 1; i <= 2000; i++ {
		k := fmt.Sprintf("k/%d", i%50)
		h.must(ConfigSet{Key: k, Value: val(k, i)})
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if h.f.sp.seq < 10 {
		t.Fatalf("only %d segments were made: the compactions this test is about did not run", h.f.sp.seq)
	}
}

// TestSpillDiskFull: when the segment cannot be written (here its file is /dev/full,
// which fails every write with ENOSPC) the values stay in the heap, the state is the
// same, and the error is reported once.
func TestSpillDiskFull(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full on this system")
	}
	f := New()
	dir := t.TempDir()
	var reports []error
	if err := f.SpillTo(dir, func(err error) { reports = append(reports, err) }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	if err := os.Symlink("/dev/full", filepath.Join(dir, "1.seg")); err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, f: f}
	big := bytes.Repeat([]byte("z"), 4096)
	for i := range 10 {
		h.must(ConfigSet{Key: fmt.Sprintf("k/%d", i), Value: big})
	}
	if len(reports) != 1 || !errors.Is(reports[0], syscall.ENOSPC) {
		t.Fatalf("reports = %v, want one ENOSPC", reports)
	}
	for i := range 10 {
		if e, ok := h.f.mustGet(fmt.Sprintf("k/%d", i)); !ok || !bytes.Equal(e.Value, big) {
			t.Fatalf("k/%d lost its value", i)
		}
	}
	if st := f.SpillStats(); st.OnDisk != 0 || st.InMemory != 10*4096 {
		t.Fatalf("SpillStats = %+v, want every value in memory", st)
	}
	checkInvariants(t, f)
}

// TestSpillReadError: a spilled value that cannot be read (its file's descriptor is
// closed under the FSM, as an I/O error would) fails every read with an error, and a
// snapshot is cancelled rather than written without it.
func TestSpillReadError(t *testing.T) {
	h := newHarness(t)
	h.must(ConfigSet{Key: "a", Value: []byte("some value")})
	if err := h.f.st.seg.f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := h.f.Get("a"); !ok || !errors.Is(err, ErrValueUnreadable) {
		t.Fatalf("Get: ok=%v err=%v, want the entry and ErrValueUnreadable", ok, err)
	}
	if _, err := h.f.List(""); err == nil {
		t.Fatal("List: no error")
	}
	if _, _, err := h.f.Changes("", 0); err == nil {
		t.Fatal("Changes: no error")
	}
	snap, err := h.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	sink := &testSink{}
	if err := snap.Persist(sink); err == nil || !sink.cancelled {
		t.Fatalf("Persist: %v, cancelled=%v; want an error and a cancelled sink", err, sink.cancelled)
	}
}

// TestSpillToEmptiesDirAndRefusesEntries: stale segments of an earlier run are removed;
// SpillTo is refused on an FSM that holds entries.
func TestSpillToEmptiesDirAndRefusesEntries(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, "7.seg")
	if err := os.WriteFile(stale, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	f := New()
	if err := f.SpillTo(dir, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stale segment still there: %v", err)
	}
	h := newHeapHarness(t)
	h.must(ConfigSet{Key: "a", Value: []byte("b")})
	if err := h.f.SpillTo(t.TempDir(), nil); err == nil {
		t.Fatal("SpillTo on an FSM with entries succeeded")
	}
}

// TestSpilledHeapFollowsKeys: with the values spilled, the state's heap is the keys and
// their slots, a fraction of the data (issue 16: RSS at most twice the data).
func TestSpilledHeapFollowsKeys(t *testing.T) {
	before := liveHeap()
	f := New()
	if err := f.SpillTo(t.TempDir(), nil); err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := &harness{t: t, f: f}
	value := bytes.Repeat([]byte("v"), memTestValue)
	for i := 0; i < memTestEntries; i++ {
		h.must(ConfigSet{Key: memKey(i), Value: value})
	}
	held := liveHeap() - before
	runtime.KeepAlive(h.f)
	t.Logf("%d entries, %d bytes of data: the spilling state holds %d bytes of heap (%.2fx)",
		memTestEntries, memData(), held, float64(held)/float64(memData()))
	if held > memData()/5 {
		t.Fatalf("the spilling state holds %d bytes of heap for %d bytes of data, want at most %d",
			held, memData(), memData()/5)
	}
	if e, _ := f.mustGet(memKey(17)); !bytes.Equal(e.Value, value) {
		t.Fatal("a spilled value reads back wrong")
	}
	if st := f.SpillStats(); st.OnDisk != memTestEntries*memTestValue || st.InMemory != 0 || st.FileBytes != st.OnDisk {
		t.Fatalf("SpillStats = %+v, want all %d bytes of values on disk", st, memTestEntries*memTestValue)
	}
}
