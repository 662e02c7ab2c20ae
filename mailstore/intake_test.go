package mailstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/pmgcm/pmgcm/internal/testutil"
)

// journalSegments lists the segment files of the store in dir.
func journalSegments(t *testing.T, dir string) []string {
	t.Helper()
	segs, err := listSegments(filepath.Join(dir, "journal"))
	if err != nil {
		t.Fatal(err)
	}
	return segs
}

// crashCopy copies dir as a kill -9 would leave it: what the page cache holds, with
// every file the process had open.
func crashCopy(t *testing.T, dir string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "crashed")
	copyTree(t, dir, dst)
	return dst
}

// holdIndex holds the index's group commit (the journal still acknowledges): the
// returned func lets it go.
func holdIndex(t *testing.T, s *Store) func() {
	t.Helper()
	release := make(chan struct{})
	var once sync.Once
	s.setCommitHook(func(int) { <-release })
	let := func() { once.Do(func() { close(release) }) }
	t.Cleanup(let)
	return let
}

// An Accept is acknowledged once its record is in the journal: with the index held,
// a crash right then leaves the message in the journal only, and Open indexes it with
// its body, contiguous with the ones before.
func TestJournalReplayIndexesAcknowledged(t *testing.T) {
	dir := t.TempDir()
	var cid atomic.Uint64
	cid.Store(3)
	s := openStore(t, dir, &cid, nil)
	braw := message("indexed", 2000)
	before := accept(t, s, braw)
	let := holdIndex(t, s)
	var raws [][]byte
	var metas []Meta
	for i := 0; i < 4; i++ {
		raw := message(fmt.Sprintf("journal only %d", i), 3000+i)
		// The inline records; the last one is larger than maxInline: its record
		// names its synced spooled file.
		if i == 3 {
			raw = message("large", maxInline+10)
		}
		m, err := s.Accept("a@example.org", []string{"b@example.net"}, bytes.NewReader(raw))
		if err != nil {
			t.Fatal(err)
		}
		raws, metas = append(raws, raw), append(metas, m)
	}
	if len(journalSegments(t, dir)) == 0 {
		t.Fatal("no journal segment while messages wait for the index")
	}
	crashed := crashCopy(t, dir)
	let()
	s2 := openStore(t, crashed, &cid, nil)
	checkBody(t, s2, before, braw)
	for i, m := range metas {
		if m.Seq != before.Seq+1+uint64(i) {
			t.Fatalf("message %d got seq %d, want %d", i, m.Seq, before.Seq+1+uint64(i))
		}
		checkBody(t, s2, m, raws[i])
	}
	checkContiguous(t, s2, 3, 5)
	if n, _ := s2.Stats(); n != 5 {
		t.Fatalf("stats %d messages, want 5", n)
	}
	if segs := journalSegments(t, crashed); len(segs) != 0 {
		t.Fatalf("segments left after replay: %v", segs)
	}
	// The next message continues the sequence.
	if m := accept(t, s2, message("after", 100)); m.Seq != 6 {
		t.Fatalf("next message seq %d, want 6", m.Seq)
	}
}

// The bodies of indexed messages are not synced on their own: a crash before the
// checkpoint may lose their data. Open rewrites each from its journal record, and does
// not bring back a message deleted meanwhile.
func TestJournalReplayRewritesLostBodies(t *testing.T) {
	dir := t.TempDir()
	var cid atomic.Uint64
	cid.Store(2)
	s := openStore(t, dir, &cid, nil)
	a := message("kept", 5000)
	b := message("deleted", 5000)
	c := message("name lost", 5000)
	ma, mb, mc := accept(t, s, a), accept(t, s, b), accept(t, s, c)
	if _, err := s.SetState(mb.ID, StateDeleted); err != nil {
		t.Fatal(err)
	}
	crashed := crashCopy(t, dir)
	// What a power loss can leave of a body written but not synced: nothing.
	if err := os.Truncate(filepath.Join(crashed, strings.TrimPrefix(s.BodyPath(ma.ID), dir)), 0); err != nil {
		t.Fatal(err)
	}
	// Or the final name, with the spooled one already flushed away.
	if err := os.Remove(filepath.Join(crashed, strings.TrimPrefix(s.BodyPath(mc.ID), dir))); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(crashed, "tmp")); err != nil {
		t.Fatal(err)
	}
	s2 := openStore(t, crashed, &cid, nil)
	checkBody(t, s2, ma, a)
	checkBody(t, s2, mc, c)
	got, err := s2.Get(mb.ID)
	if err != nil || got.State != StateDeleted || got.HaveBody {
		t.Fatalf("deleted message after replay: %+v, %v", got, err)
	}
	if _, err := os.Stat(s2.BodyPath(mb.ID)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the deleted message's body came back: %v", err)
	}
}

// A torn last group (a crash during its write: never acknowledged) ends the segment;
// the messages before it are all there.
func TestJournalReplayTornTail(t *testing.T) {
	dir := t.TempDir()
	var cid atomic.Uint64
	cid.Store(4)
	s := openStore(t, dir, &cid, nil)
	let := holdIndex(t, s)
	m := accept(t, s, message("whole", 1000))
	crashed := crashCopy(t, dir)
	let()
	segs := journalSegments(t, crashed)
	if len(segs) != 1 {
		t.Fatalf("segments %v, want 1", segs)
	}
	// Half of a second record, as a crash in the middle of its write leaves it.
	var rec []byte
	rec, err := appendRecord(rec, &jrecord{kind: recInline, meta: Meta{ID: "4-2", Origin: 4, Seq: 2, Size: 3}, spooled: "accept-x", body: []byte("abc")})
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(segs[0], os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(rec[:len(rec)/2]); err != nil {
		t.Fatal(err)
	}
	_ = f.Close()
	s2 := openStore(t, crashed, &cid, nil)
	checkContiguous(t, s2, 4, 1)
	if got, err := s2.Get(m.ID); err != nil || !got.HaveBody {
		t.Fatalf("the acknowledged message: %+v, %v", got, err)
	}
}

// A damaged record with a later segment after it means acknowledged messages cannot
// be read back in order: Open fails and names the file to move aside.
func TestJournalReplayDamagedSegmentRefused(t *testing.T) {
	dir := t.TempDir()
	var cid atomic.Uint64
	cid.Store(5)
	s := openStore(t, dir, &cid, nil)
	let := holdIndex(t, s)
	accept(t, s, message("one", 1000))
	s.jr.size = segmentMax // the appender is idle: the next group closes the segment
	accept(t, s, message("two", 1000))
	accept(t, s, message("three", 1000))
	crashed := crashCopy(t, dir)
	let()
	segs := journalSegments(t, crashed)
	if len(segs) != 2 {
		t.Fatalf("segments %v, want 2", segs)
	}
	data, err := os.ReadFile(segs[0])
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)-10] ^= 0xff
	if err := os.WriteFile(segs[0], data, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Open(crashed, Options{LocalCID: cid.Load})
	if err == nil || !strings.Contains(err.Error(), "move "+segs[0]+" and the later segments aside") ||
		!strings.Contains(err.Error(), segs[1]) {
		t.Fatalf("open with a damaged segment: %v", err)
	}
	// Moved aside as told, the store opens without the messages from the damage on.
	aside := t.TempDir()
	for _, p := range segs {
		if err := os.Rename(p, filepath.Join(aside, filepath.Base(p))); err != nil {
			t.Fatal(err)
		}
	}
	s2, err := Open(crashed, Options{LocalCID: cid.Load})
	if err != nil {
		t.Fatalf("open with the segments moved aside: %v", err)
	}
	defer s2.Close()
	if n, _ := s2.Stats(); n != 0 {
		t.Fatalf("%d messages, want 0 (all three were only in the journal)", n)
	}
}

// A group whose journal write fails is acknowledged to none of its Accepts; the
// segment is cut back, and the next message takes the next sequence number.
func TestJournalWriteErrorAcksNone(t *testing.T) {
	dir := t.TempDir()
	var cid atomic.Uint64
	cid.Store(6)
	s := openStore(t, dir, &cid, nil)
	first := accept(t, s, message("before", 500))
	g := newJournalGate(s)
	results := make(chan acceptResult, 6)
	acceptAsync(s, "gated", 700, results)
	<-g.entered
	for i := 0; i < 5; i++ {
		acceptAsync(s, "lost", 700, results)
	}
	waitJournalQueued(t, s, 5)
	s.jr.mu.Lock()
	size := s.jr.size
	s.jr.mu.Unlock()
	var failed atomic.Int32
	s.jr.failWrite = func() error {
		failed.Add(1)
		return errors.New("no space left on device (test)")
	}
	close(g.release)
	for i := 0; i < 6; i++ {
		if r := <-results; r.err == nil {
			t.Fatalf("accept %q acknowledged although its journal write failed", r.raw[:40])
		}
	}
	if failed.Load() != 2 {
		t.Fatalf("%d groups written, want 2 (one, then five)", failed.Load())
	}
	if s.jr.size != size {
		t.Fatalf("segment size %d after the failed writes, want %d", s.jr.size, size)
	}
	s.jr.failWrite = nil
	m := accept(t, s, message("after", 500))
	if m.Seq != first.Seq+1 {
		t.Fatalf("next accept got seq %d, want %d", m.Seq, first.Seq+1)
	}
	checkContiguous(t, s, 6, 2)
	crashed := crashCopy(t, dir)
	s2 := openStore(t, crashed, &cid, nil)
	checkContiguous(t, s2, 6, 2)
	if tmp, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(tmp) > 2 {
		t.Fatalf("%d files in tmp/, want at most the two acknowledged ones' spooled names", len(tmp))
	}
}

// A closed segment is checkpointed once its records are indexed; Close checkpoints
// the last one: a clean stop leaves no segment (what a 1ca55cd binary could not read).
func TestJournalCheckpoint(t *testing.T) {
	dir := t.TempDir()
	var cid atomic.Uint64
	cid.Store(7)
	s := openStore(t, dir, &cid, nil)
	big := message("big", maxInline-200)
	n := segmentMax/len(big) + 2
	for i := 0; i < n; i++ {
		accept(t, s, big)
	}
	// The first segment was closed at segmentMax and is removed by its checkpoint.
	testutil.Poll(t, "the closed segment checkpointed", 10*time.Second, func() error {
		if segs := journalSegments(t, dir); len(segs) != 1 {
			return fmt.Errorf("segments %v", segs)
		}
		return nil
	})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if segs := journalSegments(t, dir); len(segs) != 0 {
		t.Fatalf("segments after Close: %v", segs)
	}
	s2 := openStore(t, dir, &cid, nil)
	checkContiguous(t, s2, 7, n)
}

// State changes (which take this node's sequence numbers) interleaved with intake:
// every event number is given once, in order, on this store and after a replay.
func TestJournalLocalEventsStayContiguous(t *testing.T) {
	dir := t.TempDir()
	var cid atomic.Uint64
	cid.Store(8)
	s := openStore(t, dir, &cid, nil)
	const n = 60
	var wg sync.WaitGroup
	ids := make(chan string, n)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < n/4; i++ {
				m, err := s.Accept("a@example.org", []string{"b@example.net"}, bytes.NewReader(message("x", 300)))
				if err != nil {
					t.Error(err)
					return
				}
				ids <- m.ID
			}
		}()
	}
	var released int
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(ids)
	}()
	go func() {
		defer close(done)
		for id := range ids {
			if _, err := s.SetState(id, StateReleased); err != nil {
				t.Error(err)
				return
			}
			released++
		}
	}()
	<-done
	if released != n {
		t.Fatalf("%d released, want %d", released, n)
	}
	checkEventSeqs(t, s, 8, 2*n)
	crashed := crashCopy(t, dir)
	s2 := openStore(t, crashed, &cid, nil)
	checkEventSeqs(t, s2, 8, 2*n)
}

// checkEventSeqs fails unless origin's events on s are numbered 1..n.
func checkEventSeqs(t *testing.T, s *Store, origin uint64, n int) {
	t.Helper()
	var got []uint64
	if err := s.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bktEvents).Cursor()
		for k, _ := c.Seek(u64(origin)); k != nil && bytes.HasPrefix(k, u64(origin)); k, _ = c.Next() {
			got = append(got, binary.BigEndian.Uint64(k[8:]))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != n {
		t.Fatalf("%d events of origin %d, want %d", len(got), origin, n)
	}
	for i, q := range got {
		if q != uint64(i+1) {
			t.Fatalf("event %d has seq %d", i, q)
		}
	}
}

// Wipe leaves nothing in the journal that a replay could bring back.
func TestJournalWipeLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	var cid atomic.Uint64
	cid.Store(9)
	s := openStore(t, dir, &cid, nil)
	accept(t, s, message("gone", 1000))
	if err := s.Wipe(); err != nil {
		t.Fatal(err)
	}
	crashed := crashCopy(t, dir)
	s2 := openStore(t, crashed, &cid, nil)
	if n, _ := s2.Stats(); n != 0 {
		t.Fatalf("%d messages after a wipe and a crash, want 0", n)
	}
	// The wiped store takes messages again, from seq 1.
	if m := accept(t, s, message("new", 100)); m.Seq != 1 {
		t.Fatalf("first message after the wipe: seq %d", m.Seq)
	}
}

// An index commit that keeps failing is tried again maxIndexRetries times; then the
// journal stops: reads go on without the message, Accepts are refused with the
// restart hint, and a restart indexes it from the journal.
func TestJournalIndexRetriesThenStops(t *testing.T) {
	old := indexRetryBase
	indexRetryBase = time.Millisecond
	t.Cleanup(func() { indexRetryBase = old })
	dir := t.TempDir()
	var cid atomic.Uint64
	cid.Store(10)
	s := openStore(t, dir, &cid, nil)
	var fails atomic.Int32
	s.jr.failIndex = func() error {
		fails.Add(1)
		return errors.New("bbolt commit: no space left on device (test)")
	}
	raw := message("kept in the journal", 800)
	m := accept(t, s, raw)
	if _, err := s.Get(m.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get of the message whose index failed: %v, want ErrNotFound once the journal stopped", err)
	}
	if n := fails.Load(); n != maxIndexRetries+1 {
		t.Fatalf("%d index attempts, want %d", n, maxIndexRetries+1)
	}
	_, err := s.Accept("a@example.org", []string{"b@example.net"}, bytes.NewReader(message("refused", 100)))
	if !errors.Is(err, errBroken) || !strings.Contains(err.Error(), "restart pmgclusterd") {
		t.Fatalf("accept after the journal stopped: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Logf("close of the stopped store: %v", err)
	}
	if segs := journalSegments(t, dir); len(segs) == 0 {
		t.Fatal("the stopped journal's segment was removed")
	}
	s2 := openStore(t, dir, &cid, nil)
	checkBody(t, s2, m, raw)
	checkContiguous(t, s2, 10, 1)
}

// One failed attempt is tried again, and the message is indexed: intake and reads go
// on as if nothing happened.
func TestJournalIndexRetrySucceeds(t *testing.T) {
	old := indexRetryBase
	indexRetryBase = time.Millisecond
	t.Cleanup(func() { indexRetryBase = old })
	s := newStore(t, 11)
	var fails atomic.Int32
	s.jr.failIndex = func() error {
		if fails.Add(1) <= 2 {
			return errors.New("transient (test)")
		}
		return nil
	}
	raw := message("retried", 800)
	m := accept(t, s, raw)
	checkBody(t, s, m, raw)
	if m2 := accept(t, s, message("next", 100)); m2.Seq != m.Seq+1 {
		t.Fatalf("next seq %d, want %d", m2.Seq, m.Seq+1)
	}
	checkContiguous(t, s, 11, 2)
}

// With the budget of bodies held for journal records spent (an SMTP flood), a small
// message takes the other way: its own fsync, and a record naming its file. It is
// as durable: a crash right after its 250 leaves it to the replay.
func TestJournalInlineBudgetSpent(t *testing.T) {
	dir := t.TempDir()
	var cid atomic.Uint64
	cid.Store(12)
	s := openStore(t, dir, &cid, nil)
	inlineBytes.Add(maxInlineBytes)
	t.Cleanup(func() { inlineBytes.Add(-maxInlineBytes) })
	let := holdIndex(t, s)
	raw := message("flood", 2000)
	m := accept(t, s, raw)
	crashed := crashCopy(t, dir)
	let()
	segs := journalSegments(t, crashed)
	if len(segs) != 1 {
		t.Fatalf("segments %v", segs)
	}
	f, err := os.Open(segs[0])
	if err != nil {
		t.Fatal(err)
	}
	var kinds []byte
	if err := readSegment(f, func(r *jrecord) error { kinds = append(kinds, r.kind); return nil }); err != nil {
		t.Fatal(err)
	}
	_ = f.Close()
	if len(kinds) != 1 || kinds[0] != recSpooled {
		t.Fatalf("record kinds %v, want one naming its spooled file (%d)", kinds, recSpooled)
	}
	s2 := openStore(t, crashed, &cid, nil)
	checkBody(t, s2, m, raw)
}

// An Accept waiting for its turn behind a state change goes before the state changes
// that come after it: overlapping index writers cannot hold intake off for good.
func TestJournalAppenderNotStarved(t *testing.T) {
	dir := t.TempDir()
	var cid atomic.Uint64
	cid.Store(13)
	s := openStore(t, dir, &cid, nil)
	first := accept(t, s, message("first", 300))
	turn, err := s.localTurn() // a state change in progress
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	done1 := func() { once.Do(turn) }
	t.Cleanup(done1) // before the store's Close, which waits for it
	results := make(chan acceptResult, 1)
	acceptAsync(s, "waits for its turn", 300, results)
	testutil.Poll(t, "the appender waiting for its turn", 10*time.Second, testutil.Cond(func() bool {
		s.jr.mu.Lock()
		defer s.jr.mu.Unlock()
		return s.jr.appendWaiting
	}))
	setDone := make(chan error, 1)
	go func() {
		_, err := s.SetState(first.ID, StateReleased)
		setDone <- err
	}()
	testutil.Poll(t, "the second state change waiting or done", 10*time.Second, testutil.Cond(func() bool {
		s.jr.mu.Lock()
		defer s.jr.mu.Unlock()
		return s.jr.turnWaiting > 0 || len(setDone) > 0
	}))
	if len(setDone) > 0 {
		t.Fatal("a state change took its turn before the Accept that waited for it")
	}
	done1()
	r := <-results
	if r.err != nil {
		t.Fatal(r.err)
	}
	if err := <-setDone; err != nil {
		t.Fatal(err)
	}
	// The Accept's "new" event has the number before the state change's.
	if r.meta.Seq != first.Seq+1 {
		t.Fatalf("the waiting Accept got seq %d, want %d", r.meta.Seq, first.Seq+1)
	}
	checkEventSeqs(t, s, 13, 3)
}

// An Accept whose spooled file was made before a Wipe replaced tmp/ is refused
// (ErrClosed: the client is told to retry), never acknowledged into the new content.
func TestJournalAcceptAcrossWipeRefused(t *testing.T) {
	s := newStore(t, 14)
	g := newJournalGate(s)
	results := make(chan acceptResult, 1)
	acceptAsync(s, "made before the wipe", 500, results)
	<-g.entered // its file is in the old tmp/, its group not written yet
	if err := s.Wipe(); err != nil {
		t.Fatal(err)
	}
	close(g.release)
	if r := <-results; !errors.Is(r.err, ErrClosed) {
		t.Fatalf("accept across a wipe: %v, want ErrClosed", r.err)
	}
	if n, _ := s.Stats(); n != 0 {
		t.Fatalf("%d messages after the wipe, want 0", n)
	}
	if m := accept(t, s, message("after", 100)); m.Seq != 1 {
		t.Fatalf("first message after the wipe: seq %d, want 1", m.Seq)
	}
}

// A checkpoint whose syncfs fails stops the journal (the error is reported once, and
// the bodies it covered may be lost): the segments stay, Accepts are refused with the
// restart hint, and a restart replays them. A closed descriptor stands in for the
// disk's error.
func TestJournalFailedSyncfsStops(t *testing.T) {
	dir := t.TempDir()
	var cid atomic.Uint64
	cid.Store(15)
	s, err := Open(dir, Options{LocalCID: cid.Load, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	raw := message("in the closed segment", 900)
	m := accept(t, s, raw)
	_ = s.fsFile.Close()
	s.closeSegment()
	if err := s.checkpoint(); !errors.Is(err, errBroken) {
		t.Fatalf("checkpoint with a failing syncfs: %v, want errBroken", err)
	}
	_, err = s.Accept("a@example.org", []string{"b@example.net"}, bytes.NewReader(message("refused", 100)))
	if !errors.Is(err, errBroken) || !strings.Contains(err.Error(), "restart pmgclusterd") {
		t.Fatalf("accept after a failed checkpoint: %v", err)
	}
	if got, err := s.Get(m.ID); err != nil || !got.HaveBody {
		t.Fatalf("reads go on after the journal stopped: %+v, %v", got, err)
	}
	_ = s.Close()
	if len(journalSegments(t, dir)) == 0 {
		t.Fatal("the segment of the failed checkpoint was removed")
	}
	s2 := openStore(t, dir, &cid, nil)
	checkBody(t, s2, m, raw)
	checkContiguous(t, s2, 15, 1)
}
