package mailstore

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/internal/testutil"
)

// blockingSync is a dirSyncer.sync for tests: each call reports on entered, then
// returns what release gives it.
type blockingSync struct {
	entered chan int
	release chan error
	calls   atomic.Int32
}

func newBlockingSync() *blockingSync {
	return &blockingSync{entered: make(chan int, 16), release: make(chan error)}
}

func (b *blockingSync) sync(string) error {
	n := int(b.calls.Add(1))
	b.entered <- n
	return <-b.release
}

// A round returned by request starts after the request: a request made while a round
// runs gets the next round, which all the requests of that moment share and which
// starts only once the running one ended.
func TestDirSyncerRoundStartsAfterRequest(t *testing.T) {
	b := newBlockingSync()
	d := &dirSyncer{dir: t.TempDir(), sync: b.sync}
	r1 := d.request()
	if n := <-b.entered; n != 1 {
		t.Fatalf("first fsync is call %d", n)
	}
	r2 := d.request() // made while round 1 runs: it cannot be round 1
	r3 := d.request()
	if r2 == r1 || r3 != r2 {
		t.Fatal("requests made during a round must share the next round, not the running one")
	}
	select {
	case <-r2.done:
		t.Fatal("the next round ended before the running one")
	default:
	}
	b.release <- nil
	if err := r1.wait(); err != nil {
		t.Fatal(err)
	}
	if n := <-b.entered; n != 2 {
		t.Fatalf("second fsync is call %d", n)
	}
	select {
	case <-r2.done:
		t.Fatal("round 2 ended before its fsync returned")
	default:
	}
	b.release <- errBoom
	if err := r2.wait(); !errors.Is(err, errBoom) || !errors.Is(r3.wait(), errBoom) {
		t.Fatalf("round 2: %v, want the fsync's error for each of its requests", err)
	}
	// Idle again: a new request starts a round of its own at once.
	r4 := d.request()
	if n := <-b.entered; n != 3 {
		t.Fatalf("third fsync is call %d", n)
	}
	b.release <- nil
	if err := r4.wait(); err != nil {
		t.Fatal(err)
	}
	if n := b.calls.Load(); n != 3 {
		t.Fatalf("%d fsyncs, want 3", n)
	}
}

// after(mark) shares a round that started after the mark, and only such a round: one
// that was already running when the mark was taken is not enough.
func TestDirSyncerAfterMark(t *testing.T) {
	b := newBlockingSync()
	d := &dirSyncer{dir: t.TempDir(), sync: b.sync}
	early := d.mark()
	r1 := d.request()
	<-b.entered
	late := d.mark() // taken while round 1 runs
	if got := d.after(early); got != r1 {
		t.Fatal("a round started after the mark was not shared")
	}
	r2 := d.after(late)
	if r2 == r1 {
		t.Fatal("a round that started before the mark was taken for one after it")
	}
	b.release <- nil
	<-b.entered // round 2 starts once round 1 ended
	if got := d.after(late); got != r2 {
		t.Fatal("the round running since after the mark was not shared")
	}
	b.release <- nil
	if err := r2.wait(); err != nil {
		t.Fatal(err)
	}
	if n := b.calls.Load(); n != 2 {
		t.Fatalf("%d fsyncs, want 2", n)
	}
}

// An Accept is not committed, nor acknowledged, before the fsync of tmp/ it asked for
// returned: until the background flush, its spooled name is the body's durable name
// (spool.go), so a commit before that fsync could leave an acknowledged message
// without a body after a crash.
func TestAcceptWaitsForTmpSync(t *testing.T) {
	s := newStore(t, 6)
	b := newBlockingSync()
	s.tmpSync.sync = b.sync
	var released atomic.Bool
	type result struct {
		m        Meta
		err      error
		released bool // the tmp/ fsync had returned when Accept returned
	}
	results := make(chan result, 1)
	raw := message("waits", 4000)
	go func() {
		m, err := s.Accept("a@example.org", []string{"b@example.net"}, bytes.NewReader(raw))
		results <- result{m, err, released.Load()}
	}()
	<-b.entered
	// The batch has placed the body (its final name exists): all that is left before
	// the commit is the member's ready, which must wait for the blocked fsync.
	id := MakeID(6, 1)
	testutil.Poll(t, "the body linked to its final name", 10*time.Second, func() error {
		_, err := os.Stat(s.BodyPath(id))
		return err
	})
	// A commit that did not wait would return within milliseconds: give it time to
	// (the fsync stays blocked meanwhile, so this is no wait for a state).
	select {
	case r := <-results:
		t.Fatalf("Accept returned (%v) while the fsync of tmp/ was still running", r.err)
	case <-time.After(300 * time.Millisecond):
	}
	if h := s.Heads()[6]; h != 0 {
		t.Fatalf("head %d before the fsync of tmp/ returned, want 0", h)
	}
	released.Store(true)
	b.release <- nil
	r := <-results
	if r.err != nil || !r.released {
		t.Fatalf("accept: %v (returned after the fsync of tmp/: %v)", r.err, r.released)
	}
	checkBody(t, s, r.m, raw)
	checkContiguous(t, s, 6, 1)
}

// A failed fsync of tmp/ fails the Accepts that asked for it: nothing of them is
// indexed or left in place, and the next Accept takes the next sequence number.
func TestAcceptTmpSyncErrorAcksNone(t *testing.T) {
	dir := t.TempDir()
	var cid atomic.Uint64
	cid.Store(7)
	s := openStore(t, dir, &cid, nil)
	var fail atomic.Bool
	fail.Store(true)
	s.tmpSync.sync = func(d string) error {
		if fail.Load() {
			return errBoom
		}
		return syncDir(d)
	}
	const n = 4
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.Accept("a@example.org", []string{"b@example.net"}, bytes.NewReader(message(fmt.Sprint("lost", i), 1500)))
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if !errors.Is(err, errBoom) {
			t.Fatalf("accept: %v, want the fsync's error", err)
		}
	}
	if h := s.Heads()[7]; h != 0 {
		t.Fatalf("head %d after failed accepts, want 0", h)
	}
	for seq := uint64(1); seq <= n; seq++ {
		if _, err := os.Stat(s.BodyPath(MakeID(7, seq))); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("body of failed accept %d left in place: %v", seq, err)
		}
	}
	if tmp, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(tmp) != 0 {
		t.Fatalf("spool files left: %d", len(tmp))
	}
	fail.Store(false)
	raw := message("after", 900)
	m := accept(t, s, raw)
	if m.Seq != 1 {
		t.Fatalf("next accept got seq %d, want 1", m.Seq)
	}
	checkBody(t, s, m, raw)
}
