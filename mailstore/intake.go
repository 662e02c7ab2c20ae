package mailstore

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/pmgcm/pmgcm/internal/dirsync"
)

// The intake journal: one fdatasync per group of concurrent Accepts.
//
// An Accept receives its body into memory and hands the message to the journal with
// the body for its record (inline.go: within a process-wide budget; beyond it, or above
// maxInline, the body goes to a spooled file in tmp/, fsynced on its own, and the
// record names its file). One goroutine at a time (the appender) takes every queued
// Accept, gives each its ID (the next sequence number of this node's origin, in queue
// order), appends one record per message to the current segment in journal/ (the
// metadata and, for a body of at most maxInline bytes, the body itself; a larger body,
// or one received while the budget of bodies in memory is spent, is fsynced in its
// spooled file, tmp/ is fsynced once for the group, and the record names the file)
// and fdatasyncs the segment once. Only then are the Accepts woken: a 250 is sent for a message whose
// record is on disk, with the body in it or in a synced file.
//
// Right after its fdatasync the appender hands the group's records, in sequence
// order, to the index's group commit (group.go) without waiting: each is recorded
// in bbolt (metadata, "new" event) and its final file written from memory (a spooled
// body: its spooled name recorded and the file linked to its final name, as an
// Accept's batch did before), with no fsync (the journal holds what a crash could
// lose). The memory goes back to the budget once the record is indexed. Every read
// and write of the index (view, update) first waits until every acknowledged message
// is indexed, so a caller sees what it was told
// is stored; a writer of this node's own events (update: a state change) also holds
// the appender off while it runs, so sequence numbers stay contiguous.
//
// A failed index commit is tried again (intakeindex.go) before the journal stops.
//
// Checkpoint: a segment is closed at segmentMax bytes; once every record of the
// closed segments is indexed, syncfs(2) makes the bodies, their names and their
// directories durable, and the closed segments are removed (a failed syncfs stops
// the journal). Close, Wipe and a restore's swap checkpoint every segment first.
// Open replays what a crash left (replay.go): a record not yet indexed is indexed,
// an indexed inline body is written again from its record, and a large body whose
// final name was lost is linked again from its spooled name.
//
// Compatibility: journal/ is new in this version and a 1ca55cd binary ignores it.
// After a clean stop there is no segment left; a downgrade right after a crash,
// before this version has opened the store once, would drop the messages the
// journal held (as with the spool bucket, spool.go).

// segmentMax is the size at which the current segment is closed and checkpointed.
const segmentMax = 8 << 20

// indexDelay is how long an acknowledged record waits for others to share its index
// commit (bbolt's two fdatasyncs), unless a reader or writer of the index needs it
// sooner. Under load its index request then lingers in the group commit too, up to
// commitLinger (group.go).
const indexDelay = 5 * time.Millisecond

// errBroken wraps the error that stopped the journal until a restart.
var errBroken = errors.New("mailstore: intake journal stopped")

// intakeReq is one Accept waiting for its record to be durable.
type intakeReq struct {
	rec   jrecord
	gen   uint64       // the content generation the body (in memory or its spooled file) belongs to
	tmp   string       // the spooled file's path ("" for a body received into memory)
	mem   *memBody     // a body received into memory: the index writes its file from it
	ready func() error // recSpooled: waits for the body's fsync
	err   error
	done  chan struct{}
}

// releaseMemLocked gives back the body in memory of a record no index commit will
// place any more (indexed, or the store closed); the journal's mu is held.
func (r *intakeReq) releaseMemLocked() {
	r.mem.release()
	r.mem = nil
}

// segment is a closed segment waiting for its checkpoint.
type segment struct {
	path string
	last uint64   // the journal counter of its last record
	ids  []string // the IDs of its records: their bodies leave the page cache after the checkpoint
}

// journal is a store's intake journal. mu guards every field; it is never held
// across I/O: the appender, the turn of an index writer and the checkpoint are
// states that the others wait on with cond.
type journal struct {
	mu   sync.Mutex
	cond *sync.Cond

	queue     []*intakeReq
	leader    bool // an appender runs or is about to
	appending bool // an appender is writing a group (it owns f, seg and size)
	updating  int  // index writers of local events in progress (update)
	// appendWaiting: an appender with a group waits for its turn (new index
	// writers then wait for it); turnWaiting counts the index writers waiting.
	appendWaiting bool
	turnWaiting   int
	held          int // Close, Wipe or a swap: no append starts
	closed        bool
	broken        error

	// Counters of records in this process: assigned once its group's fdatasync
	// returned (so every assigned record is acknowledged), flushed when handed to
	// the index's group commit, indexed when its index commit returned (in order).
	assigned, flushed, indexed uint64

	// The sequence allocator of this node's origin: next is the next seq to give
	// when valid (reloaded from the index when an update ran or the origin changed).
	origin, next uint64
	valid        bool

	f      *os.File
	seg    uint64 // the current segment's number
	size   int64
	ids    []string // the IDs of the current segment's records
	segs   []segment
	cpBusy bool

	indexTimer *time.Timer // the flush of the records after flushed, due at indexDelay
	unindexed  []indexItem // acknowledged, not yet indexed, in order (intakeindex.go)
	retries    int         // index attempts failed in a row
	retryTimer *time.Timer
	buf        []byte

	// Test hooks: hook (set with mu held) is called with each group's size before it
	// is written, with no lock held; failWrite, when set, fails the next writes of a group as the
	// disk would (the segment is cut back as after a real failure); failIndex
	// fails index commits (intakeindex.go).
	hook      func(n int)
	failWrite func() error
	failIndex func() error // set before the first Accept: fails index commits
}

func (j *journal) init() { j.cond = sync.NewCond(&j.mu) }

func (s *Store) journalDir() string { return filepath.Join(s.dir, "journal") }

// syncFS syncs the store's file system through fsFile, the store's own descriptor of
// its directory, open from Open to Close: syncfs(2) reports a writeback error to
// each descriptor once, from its opening on, so a descriptor opened for the call
// would miss an error of a body written before.
//
// A failure is kept: the page cache may then hold, as clean, data the disk lost, and
// a later syncfs would succeed without it, so every later call fails with the same
// error (received bodies are not marked held, recv.go) and the journal stops (intake
// is refused until a restart, whose replay rewrites the accepted bodies).
func (s *Store) syncFS() error {
	if p := s.fsErr.Load(); p != nil {
		return *p
	}
	if err := syncFSOf(s.fsFile); err != nil {
		err = fmt.Errorf("%w: the file system may have lost data written before: restart pmgclusterd once it is fixed", err)
		s.fsErr.CompareAndSwap(nil, &err)
		_ = s.breakJournal(err)
		return *s.fsErr.Load()
	}
	return nil
}

// appendIntake queues r and waits until its record is durable or failed.
func (s *Store) appendIntake(r *intakeReq) error {
	r.done = make(chan struct{})
	j := &s.jr
	j.mu.Lock()
	if j.broken != nil {
		j.mu.Unlock()
		return j.broken
	}
	if j.closed {
		j.mu.Unlock()
		return ErrClosed
	}
	j.queue = append(j.queue, r)
	lead := !j.leader
	j.leader = true
	j.mu.Unlock()
	if lead {
		// The caller that found the appender idle writes the first group (its own
		// message is in it) and hands any later ones to a new goroutine.
		if s.appendNext() {
			go s.appendLoop()
		}
	}
	<-r.done
	return r.err
}

func (s *Store) appendLoop() {
	for s.appendNext() {
	}
}

// appendNext writes the queued requests as one group; it reports whether the
// appender must go on (more were queued meanwhile), else it has marked it idle.
func (s *Store) appendNext() bool {
	j := &s.jr
	j.mu.Lock()
	j.waitTurnLocked()
	batch := j.queue
	j.queue = nil
	hook := j.hook
	j.mu.Unlock()
	if len(batch) > 0 && hook != nil {
		hook(len(batch))
	}
	j.mu.Lock()
	j.waitTurnLocked() // again: a Close or a Wipe may have come meanwhile
	fail := j.broken
	if fail == nil && j.closed {
		fail = ErrClosed
	}
	if len(batch) > 0 && fail == nil {
		j.appending = true
	}
	j.mu.Unlock()
	if len(batch) > 0 {
		if fail != nil {
			failAll(batch, fail)
		} else {
			s.appendGroup(batch)
			j.mu.Lock()
			j.appending = false
			j.cond.Broadcast()
			j.mu.Unlock()
		}
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if len(j.queue) == 0 {
		j.leader = false
		return false
	}
	return true
}

// waitTurnLocked waits, with mu held, while an index writer or a hold keeps the
// appender off (until the store closes or the journal stops).
func (j *journal) waitTurnLocked() {
	for (j.updating > 0 || j.held > 0) && !j.closed && j.broken == nil {
		j.appendWaiting = true
		j.cond.Wait()
	}
	j.appendWaiting = false
}

// appendGroup writes batch's records and fdatasyncs them (see the top of the file).
// The caller holds the appending state.
func (s *Store) appendGroup(batch []*intakeReq) {
	j := &s.jr
	live := batch[:0:0]
	spooled := false
	for _, r := range batch {
		switch {
		case !s.currentLocked(r.gen):
			r.finish(fmt.Errorf("%w: the store's content was replaced while the message was received", ErrClosed))
		case r.ready != nil:
			if err := r.ready(); err != nil {
				r.finish(err)
				continue
			}
			spooled = true
			live = append(live, r)
		default:
			live = append(live, r)
		}
	}
	if spooled {
		if err := dirsync.Sync(filepath.Join(s.dir, "tmp")); err != nil {
			failAll(live, err)
			return
		}
	}
	if len(live) == 0 {
		return
	}
	if err := s.loadAllocator(); err != nil {
		failAll(live, err)
		return
	}
	first := j.next
	buf := j.buf[:0]
	enc := live[:0:0]
	for _, r := range live {
		m := &r.rec.meta
		m.Origin, m.Seq = j.origin, j.next
		m.ID = MakeID(m.Origin, m.Seq)
		m.HaveBody = true
		var err error
		if buf, err = appendRecord(buf, &r.rec); err != nil {
			r.finish(err) // this message alone; its number goes to the next
			continue
		}
		j.next++
		enc = append(enc, r)
	}
	live = enc
	if len(live) == 0 {
		return
	}
	err := s.writeGroup(buf)
	if cap(buf) <= 4*maxInline {
		j.buf = buf[:0]
	}
	if err != nil {
		j.next = first // nothing of the group is on disk (writeGroup cut it off)
		failAll(live, err)
		return
	}
	// Hand the records to the index in sequence order before anyone else can take
	// a sequence number (the appending state is still held), then wake the Accepts.
	j.mu.Lock()
	for _, r := range live {
		j.assigned++
		j.ids = append(j.ids, r.rec.meta.ID)
		r.rec.body = nil // written (a body in memory stays in r.mem until indexed)
		j.unindexed = append(j.unindexed, indexItem{r: r, n: j.assigned})
	}
	if j.indexTimer == nil {
		j.indexTimer = time.AfterFunc(indexDelay, s.flushToIndex)
	}
	j.mu.Unlock()
	for _, r := range live {
		r.finish(nil)
	}
	if j.size >= segmentMax {
		s.closeSegment()
		go s.checkpoint()
	}
}

func failAll(rs []*intakeReq, err error) {
	for _, r := range rs {
		r.finish(err)
	}
}

func (r *intakeReq) finish(err error) {
	r.err = err
	close(r.done)
}

// loadAllocator makes the allocator valid for this node's origin: after an update
// (which may have written a local event) or a change of CID it waits until every
// record is indexed and reads the cursor. The caller holds the appending state.
func (s *Store) loadAllocator() error {
	j := &s.jr
	origin := s.opts.LocalCID()
	j.mu.Lock()
	if j.valid && j.origin == origin {
		j.mu.Unlock()
		return nil
	}
	s.waitIndexedLocked(j.assigned)
	err := j.broken
	j.mu.Unlock()
	if err != nil {
		return err
	}
	var cur uint64
	if err := s.view(func(tx *bolt.Tx) error {
		cur = cursor(tx, origin)
		return nil
	}); err != nil {
		return err
	}
	j.mu.Lock()
	j.origin, j.next, j.valid = origin, cur+1, true
	j.mu.Unlock()
	return nil
}

// writeGroup appends buf to the current segment (opening one if needed) and
// fdatasyncs it. On failure it cuts the segment back to its size before and syncs
// that; if even that fails the journal is stopped (errBroken) until a restart.
func (s *Store) writeGroup(buf []byte) error {
	j := &s.jr
	if j.f == nil {
		if err := s.openSegment(); err != nil {
			return err
		}
	}
	var err error
	if j.failWrite != nil {
		err = j.failWrite()
	}
	if err == nil {
		_, err = j.f.Write(buf)
	}
	if err == nil {
		err = fdatasync(j.f)
	}
	if err == nil {
		j.size += int64(len(buf))
		return nil
	}
	err = fmt.Errorf("mailstore: intake journal: %w", err)
	if terr := j.f.Truncate(j.size); terr != nil {
		return s.breakJournal(fmt.Errorf("%w; and cutting the segment back failed: %v", err, terr))
	}
	if _, serr := j.f.Seek(j.size, 0); serr != nil {
		return s.breakJournal(fmt.Errorf("%w; and cutting the segment back failed: %v", err, serr))
	}
	if serr := fdatasync(j.f); serr != nil {
		return s.breakJournal(fmt.Errorf("%w; and cutting the segment back failed: %v", err, serr))
	}
	return err
}

// breakJournal stops the journal: every later Accept fails with err (wrapped in
// errBroken) until the daemon restarts and Open replays the journal.
func (s *Store) breakJournal(err error) error {
	s.jr.mu.Lock()
	defer s.jr.mu.Unlock()
	return s.jr.breakLocked(err)
}

// breakLocked is breakJournal with mu held.
func (j *journal) breakLocked(err error) error {
	if j.broken == nil {
		j.broken = fmt.Errorf("%w: %w: restart pmgclusterd, which recovers every accepted message from the journal", errBroken, err)
	}
	j.cond.Broadcast()
	return j.broken
}

// openSegment creates the next segment file with its magic, synced, and syncs the
// journal directory so that its name survives a crash.
func (s *Store) openSegment() error {
	j := &s.jr
	if err := os.MkdirAll(s.journalDir(), 0o750); err != nil {
		return fmt.Errorf("mailstore: intake journal: %w", err)
	}
	j.seg++
	p := filepath.Join(s.journalDir(), fmt.Sprintf("%020d.seg", j.seg))
	f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("mailstore: intake journal: %w", err)
	}
	_, err = f.Write([]byte(journalMagic))
	if err == nil {
		err = fdatasync(f)
	}
	if err == nil {
		err = dirsync.Sync(s.journalDir())
	}
	if err != nil {
		_ = f.Close()
		_ = os.Remove(p)
		return fmt.Errorf("mailstore: intake journal: %w", err)
	}
	j.f, j.size = f, int64(len(journalMagic))
	return nil
}

// closeSegment closes the current segment and queues it for a checkpoint. The
// caller holds the appending state (or the journal is held and idle).
func (s *Store) closeSegment() {
	j := &s.jr
	j.mu.Lock()
	f := j.f
	j.f = nil
	if f != nil {
		j.segs = append(j.segs, segment{path: f.Name(), last: j.assigned, ids: j.ids})
	}
	j.ids = nil
	j.mu.Unlock()
	if f != nil {
		_ = f.Close() // every group in it was fdatasynced
	}
}

// checkpoint removes the closed segments once their records are indexed and a
// syncfs made the bodies durable. One runs at a time. A failed syncfs stops the
// journal: the error is reported once (a later syncfs would succeed with the data
// lost), so the segments stay for Open's replay, which rewrites the bodies from them.
func (s *Store) checkpoint() error {
	j := &s.jr
	j.mu.Lock()
	for j.cpBusy {
		j.cond.Wait()
	}
	j.cpBusy = true
	segs := j.segs
	var last uint64
	if len(segs) > 0 {
		last = segs[len(segs)-1].last
	}
	s.waitIndexedLocked(last)
	err := j.broken
	j.mu.Unlock()
	if err == nil && len(segs) > 0 {
		if err = s.syncFS(); err != nil {
			err = s.breakJournal(err)
		}
		if err == nil {
			for _, g := range segs {
				if rerr := os.Remove(g.path); rerr != nil && !errors.Is(rerr, os.ErrNotExist) && err == nil {
					err = rerr
				}
			}
		}
		// The removals made durable: a segment that came back after a power loss
		// could replay messages into a store wiped since (Wipe checkpoints first).
		if err == nil {
			err = dirsync.Sync(s.journalDir())
		}
	}
	j.mu.Lock()
	if err == nil {
		j.segs = j.segs[len(segs):]
	}
	j.cpBusy = false
	j.cond.Broadcast()
	j.mu.Unlock()
	if err != nil {
		return fmt.Errorf("mailstore: intake journal checkpoint: %w", err)
	}
	// The syncfs made the segments' bodies durable (clean): their pages can go.
	for _, g := range segs {
		s.dropCachedBodies(g.ids)
	}
	return nil
}

// hold stops the appender and waits until every record is indexed and every
// segment checkpointed (Close, Wipe, a restore's swap). releaseJournal undoes it; Close
// never releases. With the journal stopped (broken) the segments are kept for Open.
func (s *Store) hold() error {
	j := &s.jr
	j.mu.Lock()
	j.held++
	for (j.appending || j.updating > 0) && j.broken == nil {
		j.cond.Wait()
	}
	err := j.broken
	j.mu.Unlock()
	if err != nil {
		return err
	}
	s.closeSegment()
	return s.checkpoint()
}

func (s *Store) releaseJournal() {
	j := &s.jr
	j.mu.Lock()
	j.held--
	j.valid = false
	j.cond.Broadcast()
	j.mu.Unlock()
}

// closeJournal holds the journal for good and fails what is queued (Close).
func (s *Store) closeJournal() error {
	err := s.hold()
	j := &s.jr
	j.mu.Lock()
	j.closed = true
	for j.appending {
		j.cond.Wait()
	}
	f := j.f
	j.f = nil
	j.cond.Broadcast()
	j.mu.Unlock()
	if f != nil {
		_ = f.Close() // a stopped journal: its segments stay for Open
	}
	if s.fsFile != nil {
		_ = s.fsFile.Close()
	}
	return err
}

// flushToIndex hands the records waiting for indexDelay to the index's group commit.
func (s *Store) flushToIndex() {
	s.jr.mu.Lock()
	s.flushToIndexLocked()
	s.jr.mu.Unlock()
}

// flushToIndexLocked is flushToIndex with mu held: the records not flushed yet are
// queued in their order, under mu, so that no other flush or index writer comes
// between them.
func (s *Store) flushToIndexLocked() {
	j := &s.jr
	if j.indexTimer != nil {
		j.indexTimer.Stop()
		j.indexTimer = nil
	}
	for _, it := range j.unindexed {
		if it.n > j.flushed {
			s.groupEnqueue(s.indexReq(it.r, it.n))
		}
	}
	j.flushed = j.assigned
}

// waitIndexedLocked waits, with mu held, until the records up to n are indexed or
// the journal stopped; records still waiting for indexDelay go to the index at once.
func (s *Store) waitIndexedLocked(n uint64) {
	j := &s.jr
	if j.indexed < n {
		s.flushToIndexLocked()
		s.gc.hurry() // the index requests linger for nobody (group.go)
	}
	for j.indexed < n && j.broken == nil {
		j.cond.Wait()
	}
}

// awaitIndexed waits until every message acknowledged so far is in the index, or
// the journal stopped (reads then go on without the messages it holds, which a
// restart indexes; writes are refused: localTurn).
func (s *Store) awaitIndexed() {
	j := &s.jr
	j.mu.Lock()
	defer j.mu.Unlock()
	s.waitIndexedLocked(j.assigned)
}

// bumpGen starts a new generation of the store's content (Wipe and a restore's
// swap, with s.mu write-held, once tmp/ is replaced; spoolReset did when they began).
func (s *Store) bumpGen() {
	s.spool.mu.Lock()
	s.spool.gen++
	s.spool.mu.Unlock()
}

// spoolGen returns the generation of the store's content (bumped by Wipe and a
// restore's swap).
func (s *Store) spoolGen() uint64 {
	s.spool.mu.Lock()
	defer s.spool.mu.Unlock()
	return s.spool.gen
}

// localTurn holds the appender off for an index writer that may take a sequence
// number of this node's origin, once every record written is indexed; the
// returned func gives the turn back (and has the allocator reread the cursor).
func (s *Store) localTurn() (func(), error) {
	j := &s.jr
	j.mu.Lock()
	// An appender waiting for its turn goes first: a stream of index writers must
	// not hold intake off (their turns overlap, so updating need never reach 0).
	for (j.appending || j.appendWaiting) && j.broken == nil {
		j.turnWaiting++
		j.cond.Wait()
		j.turnWaiting--
	}
	j.updating++
	s.waitIndexedLocked(j.assigned)
	err := j.broken
	j.mu.Unlock()
	done := func() {
		j.mu.Lock()
		j.updating--
		j.valid = false
		j.cond.Broadcast()
		j.mu.Unlock()
	}
	if err != nil {
		done()
		return nil, err
	}
	return done, nil
}

// indexReq is the group-commit request that indexes a journaled message n (its
// journal counter): as an Accept's batch did, without the directory fsync. A spooled
// body is linked from its spooled name, recorded in bucket "spool" and handed to the
// spool's flush (spool.go).
func (s *Store) indexReq(r *intakeReq, n uint64) *commitReq {
	if r.mem != nil {
		return s.indexMemReq(r, n)
	}
	tmp := r.tmp
	name := filepath.Base(tmp)
	req := s.placedIndexReq(r, n, name, true, nil, func(final string) error { return linkNew(tmp, final) })
	id, dir := r.rec.meta.ID, filepath.Dir(s.BodyPath(r.rec.meta.ID))
	req.after = func() { s.spoolAdd(spooledBody{id: id, name: name, dir: dir}) }
	return req
}

// indexMemReq is indexReq for a body received into memory (inline.go): its final
// file is written from memory, not synced (the journal's record holds the body until
// the checkpoint's syncfs, and a replay writes it again from there), and no spooled
// name is recorded: there is none.
func (s *Store) indexMemReq(r *intakeReq, n uint64) *commitReq {
	body := r.mem.b // released only once the record is indexed (indexed), after every place of it
	// A copy a retry queued, coming after the record was indexed (and its body
	// released), must not place that memory: after a Wipe or a restore's swap its
	// sequence number could fit the new content's cursor. Until the batch that checks
	// it ends nothing releases it (only a committed index of the record does).
	check := func() error {
		s.jr.mu.Lock()
		released := r.mem == nil
		s.jr.mu.Unlock()
		if released {
			return fmt.Errorf("%w: journal record %d is indexed already", ErrInvalid, n)
		}
		return nil
	}
	return s.placedIndexReq(r, n, "", false, check, func(final string) error { return writeBody(final, body) })
}

// placedIndexReq is the index request of journal record n of r: apply runs check, when
// set, and indexes the message (recording its spooled name when spool is set); place
// puts the body at its final name with put, which unplace and drop remove again.
func (s *Store) placedIndexReq(r *intakeReq, n uint64, name string, spool bool, check func() error,
	put func(final string) error) *commitReq {
	meta := r.rec.meta
	at := r.rec.at
	final := s.BodyPath(meta.ID)
	placed := false
	return &commitReq{
		apply: func(tx *bolt.Tx) error {
			if s.jr.failIndex != nil {
				if err := s.jr.failIndex(); err != nil {
					return err
				}
			}
			if check != nil {
				if err := check(); err != nil {
					return err
				}
			}
			return indexTx(tx, meta, name, at, spool)
		},
		place: func() (string, error) {
			if err := put(final); err != nil {
				return "", err
			}
			placed = true
			return "", nil
		},
		unplace: func() error {
			if err := os.Remove(final); err != nil {
				return err
			}
			placed = false
			return nil
		},
		drop: func() {
			if placed {
				_ = os.Remove(final)
				placed = false
			}
		},
		onDone: func(err error) { s.indexed(n, err) },
		linger: true, // the record is durable in the journal: readers hurry it (waitIndexedLocked)
	}
}

// indexTx records an accepted message in tx: its metadata, its "new" event and, when
// spool is set, its spooled name. Its sequence number must be the next of its origin.
func indexTx(tx *bolt.Tx, meta Meta, name string, at time.Time, spool bool) error {
	if cur := cursor(tx, meta.Origin); meta.Seq != cur+1 {
		return fmt.Errorf("%w: journaled message %s after sequence %d", ErrGap, meta.ID, cur)
	}
	if err := putRecord(tx, nil, &record{Meta: meta}); err != nil {
		return err
	}
	if spool {
		if err := tx.Bucket(bktSpool).Put([]byte(meta.ID), []byte(name)); err != nil {
			return err
		}
	}
	return putEvent(tx, Event{Origin: meta.Origin, Seq: meta.Seq, Kind: KindNew,
		MsgID: meta.ID, Msg: wireMeta(meta), At: at})
}

// linkNew links the spooled file to the final name of a new ID, replacing an
// orphan a crash before a commit left there (no record names it).
func linkNew(tmp, final string) error {
	err := os.Link(tmp, final)
	if errors.Is(err, os.ErrExist) {
		if err = os.Remove(final); err == nil {
			err = os.Link(tmp, final)
		}
	}
	return err
}
