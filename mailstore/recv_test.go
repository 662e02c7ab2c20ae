package mailstore

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

// TestRecvCrashStates puts a receiving store's directories and index in every state a
// crash can leave a received body in after its commit (the states of an accepted one,
// spoolStates), plus two bodies whose commit never happened (one whose final name and
// data reached the disk, one whose final name reached the disk without its data) and a
// body deleted while spooled, opens it, and checks that the committed body is there
// byte-exact, the deleted one does not come back, the uncommitted ones are listed
// missing and then adopted or fetched again, and the bucket and tmp/ end empty.
func TestRecvCrashStates(t *testing.T) {
	for _, st := range spoolStates {
		t.Run(st.name, func(t *testing.T) {
			a := newStore(t, 1)
			dir := t.TempDir()
			var cid atomic.Uint64
			cid.Store(2)
			b := openStore(t, dir, &cid, nil)
			b.spool.noFlush = true // every entry stays pending, as at a crash
			raw := message("received", 3000)
			acked := accept(t, a, raw)
			gone := accept(t, a, message("deleted while spooled", 900))
			rawWhole := message("placed, not committed", 1500)
			whole := accept(t, a, rawWhole)
			rawTorn := message("placed without its data", 1700)
			torn := accept(t, a, rawTorn)
			replicate(t, a, b)
			copyBody(t, a, b, acked.ID)
			copyBody(t, a, b, gone.ID)
			if _, err := b.SetState(gone.ID, StateDeleted); err != nil {
				t.Fatal(err)
			}
			if err := b.Close(); err != nil {
				t.Fatal(err)
			}
			name := spoolName(t, dir, acked.ID)
			if !strings.HasPrefix(name, "recv-") {
				t.Fatalf("spooled name %q", name)
			}
			spooled := filepath.Join(dir, "tmp", name)
			final := b.BodyPath(acked.ID)
			st.put(t, dir, acked.ID, final, spooled)
			// Two bodies placed (spooled and final names) whose batch never
			// committed: one with its data on disk, one without.
			for _, c := range []struct {
				id   string
				data []byte
			}{{whole.ID, rawWhole}, {torn.ID, rawTorn[:100]}} {
				if err := os.WriteFile(b.BodyPath(c.id), c.data, 0o640); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, "tmp", "recv-"+c.id+"-9"), c.data, 0o640); err != nil {
					t.Fatal(err)
				}
			}

			b2 := openStore(t, dir, &cid, nil)
			if got := readBody(t, b2, acked.ID); !bytes.Equal(got, raw) {
				t.Fatalf("committed body after open: %d bytes, want %d", len(got), len(raw))
			}
			if _, err := os.Stat(b2.BodyPath(gone.ID)); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("body of a message deleted while spooled came back: %v", err)
			}
			if n := spoolEntries(t, b2); n != 0 {
				t.Fatalf("%d spool entries left after open", n)
			}
			if n := tmpCount(dir); n != 0 {
				t.Fatalf("tmp/ holds %d files after open", n)
			}
			missing, err := b2.Missing()
			if err != nil {
				t.Fatal(err)
			}
			if len(missing) != 2 {
				t.Fatalf("missing after open: %v, want the 2 uncommitted bodies", missing)
			}
			// The one whose data reached the disk is adopted, the other fetched again.
			if _, _, err := b2.BeginBody(whole.ID); !errors.Is(err, ErrExists) {
				t.Fatalf("begin on a placed, whole body: %v (want it adopted)", err)
			}
			copyBody(t, a, b2, torn.ID)
			for id, want := range map[string][]byte{whole.ID: rawWhole, torn.ID: rawTorn, acked.ID: raw} {
				if got := readBody(t, b2, id); !bytes.Equal(got, want) {
					t.Fatalf("body %s: %d bytes, want %d", id, len(got), len(want))
				}
			}
			d, err := b2.Check(context.Background(), CheckOptions{Bucket: -1, Verify: true})
			if err != nil {
				t.Fatal(err)
			}
			if d.Messages != 3 || d.Bad != 0 {
				t.Fatalf("check after open: %d messages, %d bad; want 3, 0", d.Messages, d.Bad)
			}
		})
	}
}

// A body committed again (found corrupt, fetched again) before the flush of its first
// commit keeps the entry of its second: the first commit's flush does not clear it,
// and a crash after that flush still finds the body.
func TestRecvRecommitBeforeFlush(t *testing.T) {
	a := newStore(t, 1)
	dir := t.TempDir()
	var cid atomic.Uint64
	cid.Store(2)
	b := openStore(t, dir, &cid, nil)
	b.spool.noFlush = true
	raw := message("twice", 2500)
	m := accept(t, a, raw)
	replicate(t, a, b)
	copyBody(t, a, b, m.ID)
	b.spool.mu.Lock()
	first, gen := b.spool.pending, b.spool.gen
	b.spool.pending = nil
	b.spool.mu.Unlock()
	if len(first) != 1 {
		t.Fatalf("%d pending after the first commit, want 1", len(first))
	}
	// The body is found corrupt (its final name replaced), marked missing, fetched again.
	final := b.BodyPath(m.ID)
	if err := os.Remove(final); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(final, bytes.Repeat([]byte("x"), len(raw)), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := b.Verify(m.ID); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("verify: %v", err)
	}
	copyBody(t, a, b, m.ID)
	if err := b.flushBatch(first, gen); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil { // noFlush: the second entry stays, as at a crash
		t.Fatal(err)
	}
	name := spoolName(t, dir, m.ID)
	if name == first[0].name {
		t.Fatalf("the entry names the first commit's spooled name %q", name)
	}
	if _, err := os.Stat(filepath.Join(dir, "tmp", name)); err != nil {
		t.Fatalf("the second commit's spooled name: %v", err)
	}
	// As if the final name had not reached the disk.
	if err := os.Remove(final); err != nil {
		t.Fatal(err)
	}
	b2 := openStore(t, dir, &cid, nil)
	if got := readBody(t, b2, m.ID); !bytes.Equal(got, raw) {
		t.Fatalf("body after open: %d bytes, want %d", len(got), len(raw))
	}
}

// A received body is readable under its final name at once, and the background flush
// then clears its entry and its spooled name; the partial file is gone.
func TestRecvFlush(t *testing.T) {
	a, b := newStore(t, 1), newStore(t, 2)
	raw := message("flushed", 5000)
	m := accept(t, a, raw)
	replicate(t, a, b)
	copyBody(t, a, b, m.ID)
	if got := readBody(t, b, m.ID); !bytes.Equal(got, raw) {
		t.Fatal("body unreadable while spooled")
	}
	if _, err := os.Stat(b.BodyPath(m.ID) + ".part"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("partial file kept: %v", err)
	}
	b.flushSpool()
	if e, n := spoolEntries(t, b), tmpCount(b.dir); e != 0 || n != 0 {
		t.Fatalf("after the flush: %d entries, %d spooled files", e, n)
	}
	f, _, err := b.OpenBody(m.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, _ := io.ReadAll(f)
	if !bytes.Equal(got, raw) {
		t.Fatal("body after the flush differs")
	}
}
