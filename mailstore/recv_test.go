package mailstore

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"sync/atomic"
	"testing"
)

// TestRecvCrashStates opens a receiving store in the states a crash can leave received
// bodies in: one committed, one deleted after its commit, and two whose commit never
// happened (one whose final name and data reached the disk, one whose final name
// reached the disk without its data). The committed body is there byte-exact, the
// deleted one does not come back, the uncommitted ones are listed missing and then
// adopted or fetched again.
func TestRecvCrashStates(t *testing.T) {
	a := newStore(t, 1)
	dir := t.TempDir()
	var cid atomic.Uint64
	cid.Store(2)
	b := openStore(t, dir, &cid, nil)
	raw := message("received", 3000)
	acked := accept(t, a, raw)
	gone := accept(t, a, message("deleted after its commit", 900))
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
	// Two bodies renamed to their final names whose batch never committed: one with
	// its data on disk, one without.
	for _, c := range []struct {
		id   string
		data []byte
	}{{whole.ID, rawWhole}, {torn.ID, rawTorn[:100]}} {
		if err := os.WriteFile(b.BodyPath(c.id), c.data, 0o640); err != nil {
			t.Fatal(err)
		}
	}

	b2 := openStore(t, dir, &cid, nil)
	if got := readBody(t, b2, acked.ID); !bytes.Equal(got, raw) {
		t.Fatalf("committed body after open: %d bytes, want %d", len(got), len(raw))
	}
	if _, err := os.Stat(b2.BodyPath(gone.ID)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("body of a deleted message came back: %v", err)
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
}

// A received body is readable under its final name at once; it leaves no partial
// file, no spooled name and no entry in bucket "spool" (its batch synced the file
// system, recv.go).
func TestRecvNoSpooledName(t *testing.T) {
	a, b := newStore(t, 1), newStore(t, 2)
	raw := message("received", 5000)
	m := accept(t, a, raw)
	replicate(t, a, b)
	copyBody(t, a, b, m.ID)
	if got := readBody(t, b, m.ID); !bytes.Equal(got, raw) {
		t.Fatal("received body differs")
	}
	if _, err := os.Stat(b.BodyPath(m.ID) + ".part"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("partial file kept: %v", err)
	}
	if e, n := spoolEntries(t, b), tmpCount(b.dir); e != 0 || n != 0 {
		t.Fatalf("after the commit: %d spool entries, %d files in tmp/", e, n)
	}
}

// A failed syncfs fails the batch of a received body, which is then not held, and it
// is kept: a later commit fails too even once syncfs works again (the page cache may
// hold as clean what the disk lost), intake stops with the restart hint, and a
// restart fetches the body again.
func TestRecvFailedSyncfsKept(t *testing.T) {
	a := newStore(t, 1)
	dir := t.TempDir()
	var cid atomic.Uint64
	cid.Store(2)
	b := openStore(t, dir, &cid, nil)
	raw := message("first", 2000)
	m1 := accept(t, a, raw)
	m2 := accept(t, a, message("second", 2100))
	replicate(t, a, b)

	good := b.fsFile
	bad, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	_ = bad.Close()
	b.fsFile = bad // syncfs on a closed descriptor fails (EBADF, for EIO)
	if err := commitFrom(t, a, b, m1.ID); err == nil || !strings.Contains(err.Error(), "restart pmgclusterd") {
		t.Fatalf("commit with a failing syncfs: %v, want an error asking for a restart", err)
	}
	b.fsFile = good // syncfs works again
	if err := commitFrom(t, a, b, m2.ID); err == nil {
		t.Fatal("commit after a failed syncfs succeeded: the failure was forgotten")
	}
	for _, id := range []string{m1.ID, m2.ID} {
		if b.HasBody(id) {
			t.Fatalf("body %s held after its batch failed", id)
		}
	}
	if _, err := b.Accept("a@example.org", []string{"b@example.net"}, bytes.NewReader(message("refused", 100))); !errors.Is(err, errBroken) {
		t.Fatalf("accept after a failed syncfs: %v, want errBroken", err)
	}
	_ = b.Close() // the journal stopped: its closing checkpoint fails, as the commits did
	b2 := openStore(t, dir, &cid, nil)
	missing, err := b2.Missing()
	if err != nil || len(missing) != 2 {
		t.Fatalf("missing after the restart: %v, %v; want both bodies", missing, err)
	}
	// Its final name holds the whole body: it is adopted (BeginBody fsyncs it first)
	// or fetched again.
	switch w, _, err := b2.BeginBody(m1.ID); {
	case err == nil:
		_ = w.Close()
		copyBody(t, a, b2, m1.ID)
	case !errors.Is(err, ErrExists):
		t.Fatal(err)
	}
	if got := readBody(t, b2, m1.ID); !bytes.Equal(got, raw) {
		t.Fatal("body after the restart differs")
	}
}

// commitFrom copies the body of id from src into a BodyWriter of dst and returns
// what its Commit returns.
func commitFrom(t *testing.T, src, dst *Store, id string) error {
	t.Helper()
	f, _, err := src.OpenBody(id)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w, _, err := dst.BeginBody(id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(w, f); err != nil {
		t.Fatal(err)
	}
	return w.Commit()
}

// openFDs counts this process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	return len(ents)
}

// TestBodyWriterOpensOnWrite: a BodyWriter holds no descriptor until its first Write, so
// that a fetcher may begin the writers of a whole bulk answer at once (mailrepl) without
// holding a file for each; a partial file that already holds the whole body commits with
// no Write at all.
func TestBodyWriterOpensOnWrite(t *testing.T) {
	a, b := newStore(t, 1), newStore(t, 2)
	raws := map[string][]byte{}
	for k := 0; k < 20; k++ {
		raw := message("opens on write", 2000+k)
		raws[accept(t, a, raw).ID] = raw
	}
	ids := replicate(t, a, b)
	// The source closes first: its journal's segments open and close in the background.
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	before := openFDs(t)
	var ws []*BodyWriter
	for _, id := range ids {
		w, off, err := b.BeginBody(id)
		if err != nil || off != 0 {
			t.Fatalf("begin %s: %d %v", id, off, err)
		}
		ws = append(ws, w)
	}
	if n := openFDs(t); n > before {
		t.Fatalf("%d writers begun hold %d descriptors", len(ws), n-before)
	}
	for i, w := range ws {
		raw := raws[ids[i]]
		if i == 0 {
			// The first: its partial file holds the whole body already (an earlier
			// writer's), and it commits with no Write.
			if _, err := w.Write(raw); err != nil {
				t.Fatal(err)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			w2, off, err := b.BeginBody(ids[0])
			if err != nil || off != int64(len(raw)) {
				t.Fatalf("resume: %d %v", off, err)
			}
			if err := w2.Commit(); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if _, err := w.Write(raw); err != nil {
			t.Fatal(err)
		}
		if n := openFDs(t); n != before+1 {
			t.Fatalf("one writer written to: %d descriptors more, want 1", n-before)
		}
		if err := w.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	if n := openFDs(t); n > before {
		t.Fatalf("%d descriptors left open", n-before)
	}
	for _, id := range ids {
		if got := readBody(t, b, id); !bytes.Equal(got, raws[id]) {
			t.Fatalf("body of %s: %d bytes, want %d", id, len(got), len(raws[id]))
		}
	}
}
