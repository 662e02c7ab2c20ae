package mailstore

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"

	"github.com/pmgcm/pmgcm/internal/testutil"
)

// storeIn opens a fresh store of local CID id and returns it, its directory and its CID.
func storeIn(t *testing.T, id uint64) (*Store, string, *atomic.Uint64) {
	t.Helper()
	dir := t.TempDir()
	cid := new(atomic.Uint64)
	cid.Store(id)
	return openStore(t, dir, cid, nil), dir, cid
}

// TestReadInline: a body that fits (up to maxInline, with the budget) ends in memory
// whole; a larger one leaves what was read in m.b and m.tail, nothing lost and nothing
// read twice; the writer beside sees every byte once; the budget comes back whole on
// release. Small reads (iotest.OneByteReader's) and reads ending with io.EOF alongside
// data (DataErrReader's) are read the same.
func TestReadInline(t *testing.T) {
	start := inlineBytes.Load()
	for _, size := range []int{0, 1, 64<<10 - 1, 64 << 10, 64<<10 + 1, maxInline - 1, maxInline, maxInline + 1, maxInline + 600, 3 * maxInline} {
		for name, wrap := range map[string]func(io.Reader) io.Reader{
			"plain": func(r io.Reader) io.Reader { return r },
			"bytes": iotest.OneByteReader,
			"eof":   iotest.DataErrReader,
		} {
			if name == "bytes" && size > 2*maxInline {
				continue
			}
			t.Run(fmt.Sprintf("%d/%s", size, name), func(t *testing.T) {
				raw := message("x", size)
				var also bytes.Buffer
				r := wrap(bytes.NewReader(raw))
				m, ended, err := readInline(r, &also)
				if err != nil {
					t.Fatal(err)
				}
				defer m.release()
				rest, err := io.ReadAll(r)
				if err != nil {
					t.Fatal(err)
				}
				got := append(append(append([]byte(nil), m.b...), m.tail...), rest...)
				if !bytes.Equal(got, raw) {
					t.Fatalf("memory, tail and the rest are %d bytes, not the %d sent", len(got), len(raw))
				}
				if also.Len() != len(m.b)+len(m.tail) || !bytes.Equal(also.Bytes(), raw[:also.Len()]) {
					t.Fatalf("the writer beside saw %d bytes, want the %d read", also.Len(), len(m.b)+len(m.tail))
				}
				fits := len(raw) <= maxInline
				if ended != fits || (ended && len(rest)+len(m.tail) != 0) {
					t.Fatalf("%d bytes: ended %v with %d in the tail and %d left; want ended %v", len(raw), ended, len(m.tail), len(rest), fits)
				}
			})
		}
	}
	if got := inlineBytes.Load(); got != start {
		t.Fatalf("budget in use %d after every release, want %d", got, start)
	}
}

// TestReadInlineBudget: with too little budget for the first buffer nothing is read;
// with enough for it but not for the large one, a body that outgrows 64 KiB stops
// there (the caller goes on with a file); a read error is returned with what was read.
func TestReadInlineBudget(t *testing.T) {
	spend := func(n int64) { inlineBytes.Add(n); t.Cleanup(func() { inlineBytes.Add(-n) }) }
	spend(maxInlineBytes - inlineBytes.Load() - 64<<10 + 1) // less than 64 KiB left
	raw := message("x", 100)
	r := bytes.NewReader(raw)
	if m, ended, err := readInline(r, io.Discard); m != nil || ended || err != nil || r.Len() != len(raw) {
		t.Fatalf("no budget: got %v, ended %v, %v, %d bytes read; want nothing read", m != nil, ended, err, len(raw)-r.Len())
	}
	spend(-1) // exactly 64 KiB left
	raw = message("x", 100<<10)
	r = bytes.NewReader(raw)
	m, ended, err := readInline(r, io.Discard)
	if err != nil || ended || m == nil || len(m.b) != 64<<10 {
		t.Fatalf("budget for 64 KiB: ended %v, %v; want 64 KiB read and not ended", ended, err)
	}
	rest, _ := io.ReadAll(r)
	if got := append(append(append([]byte(nil), m.b...), m.tail...), rest...); !bytes.Equal(got, raw) {
		t.Fatal("the body is not whole across memory, tail and the rest")
	}
	m.release()

	broken := errors.New("connection reset")
	m, ended, err = readInline(io.MultiReader(bytes.NewReader(raw[:500]), iotest.ErrReader(broken)), io.Discard)
	if !errors.Is(err, broken) || ended || m == nil || len(m.b) != 500 {
		t.Fatalf("a broken transfer: ended %v, %v; want the read error with the 500 bytes read", ended, err)
	}
	m.release()
}

// TestAcceptMemoryAndFile: a body up to maxInline is received into memory: its record
// carries it and names no spooled file, and tmp/ stays empty; a larger one, and one
// received while the budget is spent, go to a synced spooled file its record names.
// Every body reads back whole, after a crash before the index too, and the budget
// comes back once they are indexed.
func TestAcceptMemoryAndFile(t *testing.T) {
	start := inlineBytes.Load()
	s, dir, cid := storeIn(t, 21)
	let := holdIndex(t, s)
	small, large := message("small", 3000), message("large", maxInline+100)
	ms := accept(t, s, small)
	ml := accept(t, s, large)
	if n, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(n) != 1 {
		t.Fatalf("tmp/ holds %d files, want the large body's alone", len(n))
	}
	crashed := crashCopy(t, dir)
	let()
	var kinds []byte
	var names []string
	for _, p := range journalSegments(t, crashed) {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := readSegment(f, func(r *jrecord) error {
			kinds, names = append(kinds, r.kind), append(names, r.spooled)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		_ = f.Close()
	}
	if len(kinds) != 2 || kinds[0] != recInline || names[0] != memSpooledName || kinds[1] != recSpooled || names[1] == memSpooledName {
		t.Fatalf("records %v naming %q; want an inline one naming no file (%q), then one naming its file", kinds, names, memSpooledName)
	}
	checkBody(t, s, ms, small)
	checkBody(t, s, ml, large)
	s2 := openStore(t, crashed, cid, nil)
	checkBody(t, s2, ms, small)
	checkBody(t, s2, ml, large)
	if got := inlineBytes.Load(); got != start {
		t.Fatalf("budget in use %d once indexed, want %d", got, start)
	}

	inlineBytes.Add(maxInlineBytes)
	t.Cleanup(func() { inlineBytes.Add(-maxInlineBytes) })
	spent := message("budget spent", 2000)
	m := accept(t, s, spent)
	checkBody(t, s, m, spent)
}

// TestAcceptMemoryReleasedAtClose: a body in memory whose index never commits (the
// journal stopped) goes back to the budget when the store closes; Open indexes it from
// the journal.
func TestAcceptMemoryReleasedAtClose(t *testing.T) {
	start := inlineBytes.Load()
	s, dir, cid := storeIn(t, 22)
	stuck := errors.New("index stuck")
	s.jr.mu.Lock()
	s.jr.failIndex = func() error { return stuck }
	s.jr.mu.Unlock()
	old := indexRetryBase
	indexRetryBase = time.Millisecond
	t.Cleanup(func() { indexRetryBase = old })
	raw := message("stuck", 5000)
	m := accept(t, s, raw)
	if inlineBytes.Load() == start {
		t.Fatal("the body is not held in memory while unindexed")
	}
	_ = s.Close()
	if got := inlineBytes.Load(); got != start {
		t.Fatalf("budget in use %d after Close, want %d", got, start)
	}
	s2 := openStore(t, dir, cid, nil)
	checkBody(t, s2, m, raw)
}

// TestIndexMemCopyAfterRelease: an index request of a body in memory whose record was
// indexed meanwhile (its memory released: a retry's late copy) places nothing, even
// when its sequence number fits the cursor (as after a Wipe).
func TestIndexMemCopyAfterRelease(t *testing.T) {
	s := newStore(t, 23)
	mem, ended, err := readInline(bytes.NewReader([]byte("a body")), io.Discard)
	if err != nil || !ended {
		t.Fatalf("readInline: ended %v, %v", ended, err)
	}
	m := Meta{ID: MakeID(23, 1), Origin: 23, Seq: 1, Size: int64(len(mem.b)), State: StateQuarantined, HaveBody: true}
	r := &intakeReq{rec: jrecord{kind: recInline, meta: m, spooled: memSpooledName}, mem: mem}
	req := s.indexMemReq(r, 1)
	req.onDone = nil // not a journal record of this store
	s.jr.mu.Lock()
	r.releaseMemLocked()
	s.jr.mu.Unlock()
	if err := s.groupCommit(req); !errors.Is(err, ErrInvalid) {
		t.Fatalf("index of a released body: %v, want it refused", err)
	}
	if _, err := os.Stat(s.BodyPath(m.ID)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the released memory was placed: %v", err)
	}
	if _, err := s.Get(m.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the message was indexed: %v", err)
	}
}

// TestReadInlineExactBuffer: a body that fills its buffer exactly keeps that buffer (the
// read that finds the end comes before a larger one is taken).
func TestReadInlineExactBuffer(t *testing.T) {
	for class, size := range inlineClassSize {
		raw := bytes.Repeat([]byte("x"), int(size))
		m, ended, err := readInline(bytes.NewReader(raw), io.Discard)
		if err != nil || !ended || m.buf.class != class || !bytes.Equal(m.b, raw) {
			t.Fatalf("%d bytes: ended %v, %v, in class %d; want it whole in class %d", size, ended, err, m.buf.class, class)
		}
		m.release()
	}
}

// TestAcceptMemoryFileUnwritable: the final file of a body in memory is written at
// indexing, after the 250; when it cannot be (a full disk; here the final name is taken
// by a directory that is not empty), the index is tried again, then the journal stops
// and refuses intake, and once the cause is gone Open writes the body from the journal.
func TestAcceptMemoryFileUnwritable(t *testing.T) {
	old := indexRetryBase
	indexRetryBase = time.Millisecond
	t.Cleanup(func() { indexRetryBase = old })
	start := inlineBytes.Load()
	s, dir, cid := storeIn(t, 24)
	blocker := s.BodyPath(MakeID(24, 1))
	if err := os.MkdirAll(filepath.Join(blocker, "x"), 0o750); err != nil {
		t.Fatal(err)
	}
	raw := message("unwritable", 4000)
	m := accept(t, s, raw)
	testutil.Poll(t, "the journal stopped", 10*time.Second, func() error {
		_, err := s.Accept("a@example.org", []string{"b@example.net"}, bytes.NewReader(message("refused", 100)))
		if !errors.Is(err, errBroken) {
			return fmt.Errorf("accept: %v, want the journal stopped", err)
		}
		return nil
	})
	_ = s.Close()
	if got := inlineBytes.Load(); got != start {
		t.Fatalf("budget in use %d after Close, want %d", got, start)
	}
	if err := os.RemoveAll(blocker); err != nil {
		t.Fatal(err)
	}
	s2 := openStore(t, dir, cid, nil)
	checkBody(t, s2, m, raw)
}
