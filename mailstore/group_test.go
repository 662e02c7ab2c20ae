package mailstore

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/pmgcm/pmgcm/internal/testutil"
)

// gate blocks the committer's first batch until release is closed, so that the
// requests queued meanwhile form one batch. It records every batch size.
type gate struct {
	entered chan struct{}
	release chan struct{}
	mu      sync.Mutex
	sizes   []int
}

func newGate(s *Store) *gate { return gateOn(s.setCommitHook) }

// newJournalGate is newGate on the intake journal's appender (intake.go): Accepts
// form groups there.
func newJournalGate(s *Store) *gate { return gateOn(s.setJournalHook) }

// setCommitHook and setJournalHook set the test hooks of the group commit and of
// the journal's appender, which background goroutines read.
func (s *Store) setCommitHook(h func(int)) {
	s.gc.mu.Lock()
	s.gc.hook = h
	s.gc.mu.Unlock()
}

// setLinger sets how long s's background batches linger (commitLinger).
func (s *Store) setLinger(d time.Duration) {
	s.gc.mu.Lock()
	s.gc.linger = d
	s.gc.mu.Unlock()
}

func (s *Store) setJournalHook(h func(int)) {
	s.jr.mu.Lock()
	s.jr.hook = h
	s.jr.mu.Unlock()
}

func gateOn(set func(func(int))) *gate {
	g := &gate{entered: make(chan struct{}), release: make(chan struct{})}
	first := true
	set(func(n int) {
		g.mu.Lock()
		g.sizes = append(g.sizes, n)
		wait := first
		first = false
		g.mu.Unlock()
		if wait {
			close(g.entered)
			<-g.release
		}
	})
	return g
}

func (g *gate) batchSizes() []int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]int(nil), g.sizes...)
}

// waitQueued waits until n requests wait in s's commit queue.
func waitQueued(t *testing.T, s *Store, n int) {
	t.Helper()
	testutil.Poll(t, fmt.Sprintf("%d requests queued", n), 10*time.Second, func() error {
		s.gc.mu.Lock()
		q := len(s.gc.queue)
		s.gc.mu.Unlock()
		if q < n {
			return fmt.Errorf("%d requests queued", q)
		}
		return nil
	})
}

// waitJournalQueued waits until n Accepts wait in s's intake journal queue.
func waitJournalQueued(t *testing.T, s *Store, n int) {
	t.Helper()
	testutil.Poll(t, fmt.Sprintf("%d requests queued", n), 10*time.Second, func() error {
		s.jr.mu.Lock()
		q := len(s.jr.queue)
		s.jr.mu.Unlock()
		if q < n {
			return fmt.Errorf("%d requests queued", q)
		}
		return nil
	})
}

// acceptResult is what an Accept started by acceptAsync returned, with the message it sent.
type acceptResult struct {
	meta Meta
	raw  []byte
	err  error
}

// acceptAsync starts an Accept on s of a new message of about size bytes; its result goes
// to results.
func acceptAsync(s *Store, subject string, size int, results chan<- acceptResult) {
	raw := message(subject, size)
	go func() {
		m, err := s.Accept("a@example.org", []string{"b@example.net"}, bytes.NewReader(raw))
		results <- acceptResult{m, raw, err}
	}()
}

// ackedOrClosed collects n results of Accepts that met a Close and returns the
// acknowledged ones; an error other than ErrClosed fails t, and so does an Accept that has
// not returned within 10 s.
func ackedOrClosed(t *testing.T, results <-chan acceptResult, n int) []acceptResult {
	t.Helper()
	var acked []acceptResult
	for i := 0; i < n; i++ {
		select {
		case r := <-results:
			switch {
			case r.err == nil:
				acked = append(acked, r)
			case !errors.Is(r.err, ErrClosed):
				t.Fatalf("accept: %v, want nil or ErrClosed", r.err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("an Accept hangs after Close")
		}
	}
	return acked
}

// checkBody fails unless the body of m on s is stored, indexed and intact.
func checkBody(t *testing.T, s *Store, m Meta, raw []byte) {
	t.Helper()
	f, got, err := s.OpenBody(m.ID)
	if err != nil {
		t.Fatalf("open body %s: %v", m.ID, err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil || !bytes.Equal(b, raw) || got.SHA256 != m.SHA256 {
		t.Fatalf("body %s differs (err %v, %d bytes, want %d)", m.ID, err, len(b), len(raw))
	}
}

// checkContiguous fails unless the events of origin are exactly 1..n, each the
// "new" event of the message with that sequence number.
func checkContiguous(t *testing.T, s *Store, origin uint64, n int) {
	t.Helper()
	evs, err := s.EventsSince(Cursors{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != n {
		t.Fatalf("%d events, want %d", len(evs), n)
	}
	for i, ev := range evs {
		if ev.Origin != origin || ev.Seq != uint64(i+1) || ev.Kind != KindNew || ev.MsgID != MakeID(origin, ev.Seq) {
			t.Fatalf("event %d is %d/%d %s %s", i, ev.Origin, ev.Seq, ev.Kind, ev.MsgID)
		}
	}
	if h := s.Heads()[origin]; h != uint64(n) {
		t.Fatalf("head %d, want %d", h, n)
	}
}

func TestGroupCommitConcurrentAccepts(t *testing.T) {
	dir := t.TempDir()
	var cid atomic.Uint64
	cid.Store(7)
	s := openStore(t, dir, &cid, nil)
	g := newJournalGate(s)
	const n = 40
	raws := make([][]byte, n)
	metas := make([]Meta, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := func(i int) {
		raws[i] = message(fmt.Sprintf("m%d", i), 3000+i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			metas[i], errs[i] = s.Accept("a@example.org", []string{"b@example.net"}, bytes.NewReader(raws[i]))
		}()
	}
	start(0)
	<-g.entered // the first Accept's group is being written: the others queue
	for i := 1; i < n; i++ {
		start(i)
	}
	waitJournalQueued(t, s, n-1)
	close(g.release)
	wg.Wait()
	if sizes := g.batchSizes(); len(sizes) != 2 || sizes[0] != 1 || sizes[1] != n-1 {
		t.Fatalf("batch sizes %v, want [1 %d]", sizes, n-1)
	}
	ids := map[string]bool{}
	for i := range metas {
		if errs[i] != nil {
			t.Fatalf("accept %d: %v", i, errs[i])
		}
		if ids[metas[i].ID] {
			t.Fatalf("ID %s given twice", metas[i].ID)
		}
		ids[metas[i].ID] = true
		sum := sha256.Sum256(raws[i])
		if metas[i].SHA256 != hex.EncodeToString(sum[:]) || metas[i].Seq == 0 {
			t.Fatalf("accept %d: meta %+v", i, metas[i])
		}
	}
	checkContiguous(t, s, 7, n)
	// Durable: a fresh open of the directory has them all.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := openStore(t, dir, &cid, nil)
	for i := range metas {
		checkBody(t, s2, metas[i], raws[i])
	}
	checkContiguous(t, s2, 7, n)
	if m, _ := s2.Stats(); m != n {
		t.Fatalf("stats %d messages, want %d", m, n)
	}
}

// A lone Accept is committed by its own caller in a batch of one: no waiting.
func TestGroupCommitLoneAccept(t *testing.T) {
	s := newStore(t, 1)
	var sizes []int
	s.setJournalHook(func(n int) { sizes = append(sizes, n) })
	for i := 0; i < 5; i++ {
		accept(t, s, message("x", 100))
	}
	if len(sizes) != 5 {
		t.Fatalf("batches %v, want 5 of 1", sizes)
	}
	for _, n := range sizes {
		if n != 1 {
			t.Fatalf("batches %v, want 5 of 1", sizes)
		}
	}
	checkContiguous(t, s, 1, 5)
}

// errBoom is a failure injected into one member of a batch.
var errBoom = errors.New("boom")

func TestGroupCommitMemberErrorAcksOnlyTheOthers(t *testing.T) {
	dir := t.TempDir()
	var cid atomic.Uint64
	cid.Store(3)
	s := openStore(t, dir, &cid, nil)
	g := newGate(s)
	var wg sync.WaitGroup
	results := make(chan acceptResult, 16)
	// Batch 2 is [accept, failApply, accept, failPlace, accept, failReady, accept].
	acceptAsync := func() {
		raw := message("ok", 2000)
		wg.Add(1)
		go func() {
			defer wg.Done()
			m, err := s.Accept("a@example.org", []string{"b@example.net"}, bytes.NewReader(raw))
			results <- acceptResult{m, raw, err}
		}()
	}
	// A member whose apply writes to the index, then fails: its writes must not
	// survive, and the others must commit without it.
	failApply := &commitReq{apply: func(tx *bolt.Tx) error {
		if err := tx.Bucket(bktInfo).Put([]byte("poison"), []byte("x")); err != nil {
			return err
		}
		return errBoom
	}}
	// A member whose place fails after the members before it were placed: they
	// are put back, and placed again at the rerun.
	failPlace := &commitReq{
		apply:   func(tx *bolt.Tx) error { return nil },
		place:   func() (string, error) { return "", errBoom },
		unplace: func() error { return nil },
	}
	// A member whose own fsync failed (ready), after every member was placed and
	// the directories synced.
	failReady := &commitReq{
		apply:   func(tx *bolt.Tx) error { return nil },
		place:   func() (string, error) { return filepath.Join(dir, "tmp"), nil },
		unplace: func() error { return nil },
		ready:   func() error { return errBoom },
	}
	memberErr := make(chan error, 3)
	acceptAsync()
	<-g.entered
	acceptAsync()
	waitQueued(t, s, 1)
	go func() { memberErr <- s.groupCommit(failApply) }()
	waitQueued(t, s, 2)
	acceptAsync()
	waitQueued(t, s, 3)
	go func() { memberErr <- s.groupCommit(failPlace) }()
	waitQueued(t, s, 4)
	acceptAsync()
	waitQueued(t, s, 5)
	go func() { memberErr <- s.groupCommit(failReady) }()
	waitQueued(t, s, 6)
	acceptAsync()
	waitQueued(t, s, 7)
	close(g.release)
	wg.Wait()
	for i := 0; i < 3; i++ {
		if err := <-memberErr; !errors.Is(err, errBoom) {
			t.Fatalf("failing member got %v, want errBoom", err)
		}
	}
	close(results)
	var ok []acceptResult
	for r := range results {
		if r.err != nil {
			t.Fatalf("accept failed with another member's error: %v", r.err)
		}
		ok = append(ok, r)
	}
	if len(ok) != 5 {
		t.Fatalf("%d accepts, want 5", len(ok))
	}
	_ = s.view(func(tx *bolt.Tx) error {
		if tx.Bucket(bktInfo).Get([]byte("poison")) != nil {
			t.Fatal("the failed member's index change was committed")
		}
		return nil
	})
	checkContiguous(t, s, 3, 5)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := openStore(t, dir, &cid, nil)
	for _, r := range ok {
		checkBody(t, s2, r.meta, r.raw)
	}
	checkContiguous(t, s2, 3, 5)
}

// When the batch as a whole fails (here: a directory sync), no member is
// acknowledged and nothing of it is in the index.
func TestGroupCommitBatchErrorAcksNone(t *testing.T) {
	dir := t.TempDir()
	var cid atomic.Uint64
	cid.Store(4)
	s := openStore(t, dir, &cid, nil)
	g := newGate(s)
	blocker, badDone := make(chan error, 1), make(chan error, 1)
	go func() { blocker <- s.groupCommit(&commitReq{apply: func(*bolt.Tx) error { return nil }}) }()
	<-g.entered
	const n = 6
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		key := []byte(fmt.Sprintf("member-%d", i))
		go func() {
			errs <- s.groupCommit(&commitReq{apply: func(tx *bolt.Tx) error {
				return tx.Bucket(bktInfo).Put(key, []byte("x"))
			}})
		}()
	}
	waitQueued(t, s, n)
	// A member whose directory cannot be synced (it names one that does not exist).
	bad := &commitReq{
		apply:   func(*bolt.Tx) error { return nil },
		place:   func() (string, error) { return filepath.Join(dir, "no-such-dir"), nil },
		unplace: func() error { return nil },
	}
	go func() { badDone <- s.groupCommit(bad) }()
	waitQueued(t, s, n+1)
	close(g.release)
	if err := <-blocker; err != nil {
		t.Fatalf("first batch: %v", err)
	}
	if err := <-badDone; err == nil {
		t.Fatal("a batch whose directory sync failed succeeded")
	}
	for i := 0; i < n; i++ {
		if err := <-errs; err == nil {
			t.Fatal("a member of the failed batch was acknowledged")
		}
	}
	if err := s.view(func(tx *bolt.Tx) error {
		for i := 0; i < n; i++ {
			if v := tx.Bucket(bktInfo).Get([]byte(fmt.Sprintf("member-%d", i))); v != nil {
				return fmt.Errorf("member %d of the failed batch is in the index", i)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// Close while requests wait for a batch: every caller returns, either
// acknowledged (and then durable) or with ErrClosed; nothing hangs.
func TestGroupCommitCloseWhilePending(t *testing.T) {
	dir := t.TempDir()
	var cid atomic.Uint64
	cid.Store(5)
	s := openStore(t, dir, &cid, nil)
	g := newJournalGate(s)
	const n = 8
	results := make(chan acceptResult, n)
	for i := 0; i < n; i++ {
		acceptAsync(s, "c", 1000, results)
		if i == 0 {
			<-g.entered
		}
	}
	waitJournalQueued(t, s, n-1)
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close blocked by a pending batch that holds no lock")
	}
	close(g.release)
	acked := ackedOrClosed(t, results, n)
	if len(acked) != 0 {
		t.Fatalf("%d accepts acknowledged after Close", len(acked))
	}
	s2 := openStore(t, dir, &cid, nil)
	if m, _ := s2.Stats(); m != 0 {
		t.Fatalf("%d messages after reopen, want 0", m)
	}
}

// Close while a batch commits: Close waits for it; its members are acknowledged
// and durable, the later ones get ErrClosed.
func TestGroupCommitCloseDuringCommit(t *testing.T) {
	dir := t.TempDir()
	var cid atomic.Uint64
	cid.Store(6)
	s := openStore(t, dir, &cid, nil)
	inTx := make(chan struct{})
	release := make(chan struct{})
	blocker := make(chan error, 1)
	go func() {
		blocker <- s.groupCommit(&commitReq{apply: func(*bolt.Tx) error {
			close(inTx)
			<-release
			return nil
		}})
	}()
	<-inTx
	const n = 6
	results := make(chan acceptResult, n)
	for i := 0; i < n; i++ {
		acceptAsync(s, "d", 1500, results)
	}
	waitQueued(t, s, n)
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	close(release)
	if err := <-blocker; err != nil {
		t.Fatalf("the batch in commit when Close came: %v", err)
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	acked := ackedOrClosed(t, results, n)
	s2 := openStore(t, dir, &cid, nil)
	for _, r := range acked {
		checkBody(t, s2, r.meta, r.raw)
	}
	if m, _ := s2.Stats(); m != int64(len(acked)) {
		t.Fatalf("%d messages after reopen, want the %d acknowledged", m, len(acked))
	}
}

// Concurrent body commits (replication receive) share batches and all end held.
func TestGroupCommitConcurrentBodyCommits(t *testing.T) {
	src := newStore(t, 1)
	dir := t.TempDir()
	var cid atomic.Uint64
	cid.Store(2)
	dst := openStore(t, dir, &cid, nil)
	const n = 30
	raws := map[string][]byte{}
	for i := 0; i < n; i++ {
		raw := message(fmt.Sprintf("r%d", i), 4000+i)
		raws[accept(t, src, raw).ID] = raw
	}
	need := replicate(t, src, dst)
	if len(need) != n {
		t.Fatalf("need %d bodies, want %d", len(need), n)
	}
	g := newGate(dst)
	blocker := make(chan error, 1)
	go func() { blocker <- dst.groupCommit(&commitReq{apply: func(*bolt.Tx) error { return nil }}) }()
	<-g.entered
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for _, id := range need {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w, off, err := dst.BeginBody(id)
			if err != nil || off != 0 {
				errs <- fmt.Errorf("begin %s: off %d: %v", id, off, err)
				return
			}
			if _, err := w.Write(raws[id]); err != nil {
				errs <- err
				return
			}
			errs <- w.Commit()
		}()
	}
	waitQueued(t, dst, n)
	close(g.release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := <-blocker; err != nil {
		t.Fatal(err)
	}
	if sizes := g.batchSizes(); len(sizes) != 2 || sizes[1] != n {
		t.Fatalf("batch sizes %v, want [1 %d]", sizes, n)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	dst2 := openStore(t, dir, &cid, nil)
	if miss, err := dst2.Missing(); err != nil || len(miss) != 0 {
		t.Fatalf("missing after commits: %d %v", len(miss), err)
	}
	for id, raw := range raws {
		m, err := dst2.Get(id)
		if err != nil {
			t.Fatal(err)
		}
		checkBody(t, dst2, m, raw)
	}
}

// A crash after a received body got its final name but before its commit leaves a
// file the index does not know: a good one is adopted (synced, then marked held), a
// damaged one (its data never reached the disk) is fetched again over it.
func TestBeginBodyAfterCrashBeforeCommit(t *testing.T) {
	src := newStore(t, 1)
	dst := newStore(t, 2)
	good, bad := message("good", 5000), message("bad", 6000)
	mg, mb := accept(t, src, good), accept(t, src, bad)
	if need := replicate(t, src, dst); len(need) != 2 {
		t.Fatalf("need %v", need)
	}
	if err := os.WriteFile(dst.BodyPath(mg.ID), good, 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst.BodyPath(mb.ID), bad[:100], 0o640); err != nil {
		t.Fatal(err)
	}
	if _, _, err := dst.BeginBody(mg.ID); !errors.Is(err, ErrExists) {
		t.Fatalf("begin over a good file: %v, want ErrExists (adopted)", err)
	}
	checkBody(t, dst, mg, good)
	w, off, err := dst.BeginBody(mb.ID)
	if err != nil || off != 0 {
		t.Fatalf("begin over a damaged file: off %d, %v", off, err)
	}
	if _, err := w.Write(bad); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	checkBody(t, dst, mb, bad)
	if miss, err := dst.Missing(); err != nil || len(miss) != 0 {
		t.Fatalf("missing: %v %v", miss, err)
	}
}
