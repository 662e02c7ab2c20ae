package mailstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/pmgcm/pmgcm/internal/testutil"
)

// spoolState is how a crash may leave an acknowledged message's names on a file system
// without a journal (each directory block written or not, independently).
type spoolState struct {
	name                  string
	entry, spooled, final bool
	staleFinal            bool // the final name is an orphan of an earlier crash
}

var spoolStates = []spoolState{
	{name: "committed, final name reached the disk", entry: true, spooled: true, final: true},
	{name: "committed, final name not on disk", entry: true, spooled: true},
	{name: "committed, final name an older orphan", entry: true, spooled: true, staleFinal: true},
	{name: "committed, spooled name gone, final synced", entry: true, final: true},
	{name: "entry cleared, spooled name left", spooled: true, final: true},
	{name: "flush done", final: true},
}

// put leaves the body of id, closed in store directory dir under its final name final and
// its spooled name spooled with its entry in the bucket, in state st.
func (st spoolState) put(t *testing.T, dir, id, final, spooled string) {
	t.Helper()
	if !st.final || st.staleFinal {
		if err := os.Remove(final); err != nil {
			t.Fatal(err)
		}
	}
	if st.staleFinal {
		if err := os.WriteFile(final, []byte("an orphan of an earlier crash"), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	if !st.spooled {
		if err := os.Remove(spooled); err != nil {
			t.Fatal(err)
		}
	}
	if !st.entry {
		setSpoolEntry(t, dir, id, "")
	}
}

// TestSpoolCrashStates puts a store's directories and index in every state a crash
// can leave a spooled body in, opens it, and checks that every acknowledged message is
// listed and readable byte-exact, that a message deleted while spooled does not come
// back, that an unacknowledged one (its batch never committed) is not in the index and
// its files do not shadow the next Accept, and that the bucket and tmp/ end empty.
func TestSpoolCrashStates(t *testing.T) {
	for _, st := range spoolStates {
		t.Run(st.name, func(t *testing.T) {
			dir := t.TempDir()
			var cid atomic.Uint64
			cid.Store(5)
			s, err := Open(dir, Options{LocalCID: cid.Load, Timeout: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			s.spool.noFlush = true // every entry stays pending, as at a crash
			raw := message("acked", maxInline+3000)
			acked := accept(t, s, raw)
			gone := accept(t, s, message("deleted while spooled", maxInline+900))
			if _, err := s.SetState(gone.ID, StateDeleted); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			name := spoolName(t, dir, acked.ID)
			spooled := filepath.Join(dir, "tmp", name)
			final := s.BodyPath(acked.ID)
			st.put(t, dir, acked.ID, final, spooled) // the acknowledged message in state st
			// An Accept whose batch never committed: its spooled file and a final
			// name for the next ID reached the disk, nothing of it is in the index.
			next := MakeID(5, gone.Seq+2) // the deletion took gone.Seq+1
			if err := os.WriteFile(filepath.Join(dir, "tmp", "accept-unacked"), []byte("never acknowledged"), 0o640); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(s.BodyPath(next), []byte("never acknowledged"), 0o640); err != nil {
				t.Fatal(err)
			}

			s2 := openStore(t, dir, &cid, nil)
			if got := readBody(t, s2, acked.ID); !bytes.Equal(got, raw) {
				t.Fatalf("acknowledged body after open: %d bytes, want %d", len(got), len(raw))
			}
			if _, err := os.Stat(s2.BodyPath(gone.ID)); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("body of a message deleted while spooled came back: %v", err)
			}
			if _, err := s2.Get(next); !errors.Is(err, ErrNotFound) {
				t.Fatalf("unacknowledged message in the index: %v", err)
			}
			d, err := s2.Check(context.Background(), CheckOptions{Bucket: -1, Verify: true})
			if err != nil {
				t.Fatal(err)
			}
			if d.Messages != 1 || d.Bad != 0 {
				t.Fatalf("check after open: %d messages, %d bad; want 1, 0", d.Messages, d.Bad)
			}
			if n := spoolEntries(t, s2); n != 0 {
				t.Fatalf("%d spool entries left after open", n)
			}
			if tmp, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(tmp) != 0 {
				t.Fatalf("tmp/ holds %d files after open", len(tmp))
			}
			// The next Accept takes the unacknowledged ID and stores its own body.
			raw2 := message("next", 1200)
			m := accept(t, s2, raw2)
			if m.ID != next {
				t.Fatalf("next accept got %s, want %s", m.ID, next)
			}
			if got := readBody(t, s2, m.ID); !bytes.Equal(got, raw2) {
				t.Fatal("the next Accept's body is not its own")
			}
		})
	}
}

// The background flush leaves the final names synced, the bucket empty and tmp/
// empty; a body is readable before and after it.
func TestSpoolFlush(t *testing.T) {
	dir := t.TempDir()
	var cid atomic.Uint64
	cid.Store(6)
	s := openStore(t, dir, &cid, nil)
	var ids []string
	var raws [][]byte
	for i := 0; i < 5; i++ {
		raw := message("flush", maxInline+700+i)
		m := accept(t, s, raw)
		ids, raws = append(ids, m.ID), append(raws, raw)
		if got := readBody(t, s, m.ID); !bytes.Equal(got, raw) {
			t.Fatal("body unreadable while spooled")
		}
	}
	if n := spoolEntries(t, s); n != 5 {
		t.Fatalf("%d spool entries before the flush, want 5", n)
	}
	testutil.Poll(t, "the background flush", 10*time.Second, func() error {
		if e, n := spoolEntries(t, s), tmpCount(dir); e != 0 || n != 0 {
			return fmt.Errorf("%d entries, %d spooled files", e, n)
		}
		return nil
	})
	for i, id := range ids {
		if got := readBody(t, s, id); !bytes.Equal(got, raws[i]) {
			t.Fatalf("body %s after the flush differs", id)
		}
	}
}

// Close flushes what is pending; Wipe forgets it.
func TestSpoolCloseAndWipe(t *testing.T) {
	dir := t.TempDir()
	var cid atomic.Uint64
	cid.Store(7)
	s := openStore(t, dir, &cid, nil)
	accept(t, s, message("a", 500))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if tmpCount(dir) != 0 {
		t.Fatal("Close left spooled names")
	}
	s = openStore(t, dir, &cid, nil)
	if n := spoolEntries(t, s); n != 0 {
		t.Fatalf("Close left %d spool entries", n)
	}
	accept(t, s, message("b", 500))
	if err := s.Wipe(); err != nil {
		t.Fatal(err)
	}
	if n := spoolEntries(t, s); n != 0 || tmpCount(dir) != 0 {
		t.Fatalf("Wipe left %d spool entries, %d spooled files", n, tmpCount(dir))
	}
	raw := message("after wipe", 600)
	m := accept(t, s, raw)
	s.flushSpool()
	if got := readBody(t, s, m.ID); !bytes.Equal(got, raw) {
		t.Fatal("body accepted after Wipe unreadable after the flush")
	}
}

// An index written without bucket "spool" (as 1ca55cd writes it) opens, and gets
// the bucket.
func TestSpoolOpensOldIndex(t *testing.T) {
	dir := t.TempDir()
	var cid atomic.Uint64
	cid.Store(8)
	s := openStore(t, dir, &cid, nil)
	raw := message("old", 800)
	m := accept(t, s, raw)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(filepath.Join(dir, "index.db"), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { return tx.DeleteBucket(bktSpool) }); err != nil {
		t.Fatal(err)
	}
	_ = db.Close()
	s2 := openStore(t, dir, &cid, nil)
	if got := readBody(t, s2, m.ID); !bytes.Equal(got, raw) {
		t.Fatal("body unreadable")
	}
	accept(t, s2, message("new", 800))
}

func tmpCount(dir string) int {
	e, _ := os.ReadDir(filepath.Join(dir, "tmp"))
	return len(e)
}

// spoolEntries counts the entries of bucket "spool" of an open store.
func spoolEntries(t *testing.T, s *Store) int {
	t.Helper()
	n := 0
	if err := s.view(func(tx *bolt.Tx) error {
		n = tx.Bucket(bktSpool).Stats().KeyN
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

// spoolName returns the spooled name recorded for id in the closed store in dir.
func spoolName(t *testing.T, dir, id string) string {
	t.Helper()
	db, err := bolt.Open(filepath.Join(dir, "index.db"), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var name string
	_ = db.View(func(tx *bolt.Tx) error {
		name = string(tx.Bucket(bktSpool).Get([]byte(id)))
		return nil
	})
	if name == "" {
		t.Fatalf("no spool entry for %s", id)
	}
	return name
}

// setSpoolEntry sets (or, with name "", deletes) the spool entry of id in the closed
// store in dir.
func setSpoolEntry(t *testing.T, dir, id, name string) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(dir, "index.db"), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bolt.Tx) error {
		if name == "" {
			return tx.Bucket(bktSpool).Delete([]byte(id))
		}
		return tx.Bucket(bktSpool).Put([]byte(id), []byte(name))
	}); err != nil {
		t.Fatal(err)
	}
}

// TestSpoolFullStartsOneFlush: while a flush runs (a stalled disk, say), committing more
// bodies past the flush threshold starts one waiting flush, not one per batch; once the
// running flush ends, that one takes every pending name.
func TestSpoolFullStartsOneFlush(t *testing.T) {
	s := newStore(t, 1)
	sp := &s.spool
	sp.token <- struct{}{} // a flush is running
	held := true
	t.Cleanup(func() { // before the store's Close, which waits for the token
		if held {
			<-sp.token
		}
	})
	dir := filepath.Join(s.dir, "tmp")
	before := runtime.NumGoroutine()
	for i := 0; i < flushMax+500; i++ {
		s.spoolAdd(spooledBody{id: fmt.Sprint(i), name: fmt.Sprintf("none-%d", i), dir: dir})
	}
	if n := runtime.NumGoroutine() - before; n > 1 {
		t.Fatalf("%d goroutines started for one full list of pending names, want 1", n)
	}
	<-sp.token // the running flush ends
	held = false
	testutil.Poll(t, "the pending names flushed", 10*time.Second, func() error {
		sp.mu.Lock()
		defer sp.mu.Unlock()
		if n := len(sp.pending); n > 0 || sp.started {
			return fmt.Errorf("%d pending, started %v", n, sp.started)
		}
		return nil
	})
}

// TestSpoolBadEntryRefusesOpen: an entry of bucket "spool" whose ID or spooled name is not
// one the store writes (a damaged or tampered index) stops Open with an error naming it,
// instead of linking or unlinking a path it names.
func TestSpoolBadEntryRefusesOpen(t *testing.T) {
	for _, e := range []struct{ id, name string }{{"../escape", "accept-1"}, {"1-1", "../../etc"}, {"1-1", ".."}} {
		dir := t.TempDir()
		var cid atomic.Uint64
		cid.Store(1)
		s, err := Open(dir, Options{LocalCID: cid.Load, Timeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		setSpoolEntry(t, dir, e.id, e.name)
		if s, err := Open(dir, Options{LocalCID: cid.Load, Timeout: time.Second}); err == nil {
			_ = s.Close()
			t.Errorf("Open with spool entry %q -> %q: no error", e.id, e.name)
		} else if !strings.Contains(err.Error(), "bad entry") {
			t.Errorf("Open with spool entry %q -> %q: %v, want a bad entry", e.id, e.name, err)
		}
	}
}
