package mailstore

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/pmgcm/pmgcm/internal/dirsync"
)

// Message states, in merge order: a state event sets the maximum of the
// current state and its own.
const (
	StateQuarantined = "quarantined"
	StateReleased    = "released"
	StateDeleted     = "deleted"
)

// Event kinds.
const (
	KindNew   = "new"
	KindState = "state"
)

// stateRank orders the states for the merge rule; 0 means unknown.
func stateRank(s string) int {
	switch s {
	case StateQuarantined:
		return 1
	case StateReleased:
		return 2
	case StateDeleted:
		return 3
	}
	return 0
}

// maxState is the merge rule: the later of two states in the order above.
func maxState(a, b string) string {
	if stateRank(b) > stateRank(a) {
		return b
	}
	return a
}

// Meta is a message's metadata. Everything but HaveBody is stamped by the
// origin and identical on every node; HaveBody is local.
type Meta struct {
	ID       string    `json:"id"`
	Origin   uint64    `json:"origin_cid"`
	Seq      uint64    `json:"seq"`
	From     string    `json:"from"`
	To       []string  `json:"to"`
	Subject  string    `json:"subject"`
	Size     int64     `json:"size"`
	SHA256   string    `json:"sha256"`
	State    string    `json:"state"`
	Received time.Time `json:"received"`
	// HaveBody is true when this node holds the verified body.
	HaveBody bool `json:"have_body,omitempty"`
}

// Event is one change, numbered per origin. Kind "new" carries Msg; kind
// "state" carries MsgID and State. At is the origin's clock, for display only.
type Event struct {
	Origin uint64    `json:"origin"`
	Seq    uint64    `json:"seq"`
	Kind   string    `json:"kind"`
	MsgID  string    `json:"msg_id"`
	Msg    *Meta     `json:"msg,omitempty"`
	State  string    `json:"state,omitempty"`
	At     time.Time `json:"at"`
}

// Cursors maps an origin CID to the highest event sequence number applied.
type Cursors map[uint64]uint64

// Options configure a Store.
type Options struct {
	// LocalCID returns this node's CID, the origin of messages accepted and
	// state changes made here. Required. It may change (a node that joins a
	// cluster gets a CID); the daemon wipes the store when it does, except on
	// create, where the standalone node's messages keep their origin (0 or the
	// old CID), which no other node of the cluster can have.
	LocalCID func() uint64
	// Timeout bounds the wait for the bbolt file lock at Open (default 5s;
	// never 0, which would wait forever).
	Timeout time.Duration
	// Now is the clock stamping Received and Event.At (default time.Now).
	Now func() time.Time
}

// record is the stored form of a message: Meta plus local bookkeeping.
type record struct {
	Meta
	// Purged marks a tombstone left by Purge.
	Purged bool `json:"purged,omitempty"`
}

// counted says whether a record counts in Stats (and needs a body).
func (r *record) counted() bool {
	return r != nil && !r.Purged && r.State != StateDeleted
}

// Buckets of index.db.
var (
	bktMeta    = []byte("meta")    // id -> record (JSON)
	bktEvents  = []byte("events")  // origin(8) seq(8) -> Event (JSON)
	bktCursors = []byte("cursors") // origin(8) -> seq(8)
	bktPending = []byte("pending") // id -> state seen before the message
	bktMissing = []byte("missing") // id -> "": counted messages without a body
	bktInfo    = []byte("info")    // keyStats, keyHorizon
	allBuckets = [][]byte{bktMeta, bktEvents, bktCursors, bktPending, bktMissing, bktInfo, bktFloors, bktSpool}

	keyStats   = []byte("stats")   // messages(8) bytes(8)
	keyHorizon = []byte("horizon") // unix nanos(8) of the latest Purge cut-off
)

// Store is a node's mail store. It is safe for concurrent use.
type Store struct {
	dir  string
	opts Options
	db   *bolt.DB

	mu     sync.RWMutex // write-held by Close and Wipe; read-held by operations
	closed bool

	chMu    sync.Mutex
	changed chan struct{}
	chDone  bool

	busyMu sync.Mutex
	busy   map[string]struct{}

	restoring atomic.Bool // a Staging is open (restore.go)

	jr     journal               // the intake journal (intake.go)
	fsFile *os.File              // the store's directory, open for syncfs (intake.go)
	fsErr  atomic.Pointer[error] // the first failed syncfs, kept (syncFS, intake.go)
	gc     committer             // group commit of Accepts and body commits (group.go)
	spool  spooler               // spooled names of accepted bodies (spool.go)
}

// Open opens (creating it if needed) the store in dir.
func Open(dir string, opts Options) (*Store, error) {
	if opts.LocalCID == nil {
		return nil, fmt.Errorf("%w: Options.LocalCID is required", ErrInvalid)
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 5 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &Store{dir: dir, opts: opts, changed: make(chan struct{}), busy: map[string]struct{}{}}
	s.gc.linger, s.gc.wake = commitLinger, make(chan struct{}, 1)
	s.spool.token = make(chan struct{}, 1)
	s.jr.init()
	if err := recoverSwap(dir); err != nil {
		return nil, err
	}
	if err := s.ensureDirs(); err != nil {
		return nil, err
	}
	fsf, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("mailstore: %w", err)
	}
	s.fsFile = fsf
	db, err := s.openIndex()
	if err != nil {
		_ = fsf.Close()
		return nil, err
	}
	s.db = db
	return s, nil
}

// openIndex opens index.db, creates the buckets it lacks, finishes what a crash left
// of the spooled bodies (spool.go) and in the intake journal (replay.go), and then
// empties tmp/ (intake that was never acknowledged).
func (s *Store) openIndex() (*bolt.DB, error) {
	db, err := bolt.Open(filepath.Join(s.dir, "index.db"), 0o600, &bolt.Options{Timeout: s.opts.Timeout})
	if err != nil {
		return nil, fmt.Errorf("mailstore: open index: %w", err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		for _, b := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("mailstore: init index: %w", err)
	}
	if err := s.recoverSpool(db); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("mailstore: open: %w", err)
	}
	if err := s.replayJournal(db); err != nil {
		_ = db.Close()
		return nil, err
	}
	if err := s.emptyTmp(); err != nil {
		_ = db.Close()
		return nil, err
	}
	return db, nil
}

// emptyTmp removes everything in tmp/.
func (s *Store) emptyTmp() error {
	tmp := filepath.Join(s.dir, "tmp")
	_ = os.RemoveAll(tmp)
	if err := os.MkdirAll(tmp, 0o750); err != nil {
		return fmt.Errorf("mailstore: %w", err)
	}
	// tmp/ is made again: its name durable before a spooled body relies on it.
	return dirsync.Sync(s.dir)
}

// makeDirs empties tmp/ and creates the directory tree (Wipe: nothing spooled is
// kept).
func (s *Store) makeDirs() error {
	if err := s.emptyTmp(); err != nil {
		return err
	}
	return s.ensureDirs()
}

// ensureDirs creates the directories that do not exist yet.
func (s *Store) ensureDirs() error {
	for _, d := range []string{"tmp", "corrupt", "journal"} {
		if err := os.MkdirAll(filepath.Join(s.dir, d), 0o750); err != nil {
			return fmt.Errorf("mailstore: %w", err)
		}
	}
	for i := 0; i < 256; i++ {
		if err := os.MkdirAll(filepath.Join(s.dir, "bodies", fmt.Sprintf("%02x", i)), 0o750); err != nil {
			return fmt.Errorf("mailstore: %w", err)
		}
	}
	if err := dirsync.Sync(filepath.Join(s.dir, "bodies")); err != nil {
		return err
	}
	// The names of tmp/, journal/ and bodies/ themselves: an Accept's durability
	// rests on them (intake.go).
	return dirsync.Sync(s.dir)
}

// Close closes the store. It is idempotent; it wakes every Changed waiter.
func (s *Store) Close() error {
	// Lingering background batches (group.go) end now, not at the end of their
	// linger: their callers (a replicator's fetchers) get their answer, ErrClosed
	// unless the batch started before the store closed. A received body not marked
	// held stays in place; the next Open's BeginBody adopts it.
	s.gc.hurry()
	// Every acknowledged message indexed and checkpointed; with the journal
	// stopped, its segments stay for Open to replay.
	_ = s.closeJournal()
	s.closeSpool()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	// With the journal stopped, records may be left unindexed (Open replays them):
	// no batch runs now (each holds s.mu), so their bodies in memory can go.
	s.jr.mu.Lock()
	for _, it := range s.jr.unindexed {
		it.r.releaseMemLocked()
	}
	s.jr.mu.Unlock()
	s.chMu.Lock()
	if !s.chDone {
		s.chDone = true
		close(s.changed)
	}
	s.chMu.Unlock()
	return s.db.Close()
}

// Wipe removes every message, event and cursor. The daemon calls it when the
// node joins a cluster (its local data is replaced with the cluster's). It
// fails with ErrBusy while a body is being received or verified.
func (s *Store) Wipe() error {
	// No message may stay in the journal for a replay to bring back.
	if err := s.hold(); err != nil {
		s.releaseJournal()
		return fmt.Errorf("mailstore: wipe: %w", err)
	}
	defer s.releaseJournal()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.idleLocked(); err != nil {
		return err
	}
	s.spoolReset()
	defer s.bumpGen() // once tmp/ is replaced (or not): an Accept's older file is refused
	if err := s.db.Update(func(tx *bolt.Tx) error {
		for _, b := range allBuckets {
			if err := tx.DeleteBucket(b); err != nil {
				return err
			}
			if _, err := tx.CreateBucket(b); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return fmt.Errorf("mailstore: wipe: %w", err)
	}
	for _, d := range []string{"bodies", "corrupt"} {
		if err := os.RemoveAll(filepath.Join(s.dir, d)); err != nil {
			return fmt.Errorf("mailstore: wipe: %w", err)
		}
	}
	if err := s.makeDirs(); err != nil {
		return err
	}
	s.notify()
	return nil
}

// LocalCID returns this node's CID as the Options give it.
func (s *Store) LocalCID() uint64 { return s.opts.LocalCID() }

// Changed returns a channel that is closed at the next change of the store
// (a message, event, body or state), and at Close. Take the channel before
// reading the state it guards, so no change is missed.
func (s *Store) Changed() <-chan struct{} {
	s.chMu.Lock()
	defer s.chMu.Unlock()
	return s.changed
}

// notify closes the current Changed channel and replaces it.
func (s *Store) notify() {
	s.chMu.Lock()
	defer s.chMu.Unlock()
	if s.chDone {
		return
	}
	close(s.changed)
	s.changed = make(chan struct{})
}

// update runs fn in a read-write transaction unless the store is closed, once every
// acknowledged message is indexed, with the intake journal held off (fn may take a
// sequence number of this node's origin: intake.go).
func (s *Store) update(fn func(tx *bolt.Tx) error) error {
	done, err := s.localTurn()
	if err != nil {
		return err
	}
	defer done()
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	return s.db.Update(fn)
}

// view runs fn in a read-only transaction unless the store is closed, once every
// acknowledged message is indexed (intake.go).
func (s *Store) view(fn func(tx *bolt.Tx) error) error {
	s.awaitIndexed()
	return s.viewCommitted(fn)
}

// viewCommitted is view without the wait: fn sees what the index has committed, not
// the acknowledged messages the intake journal has yet to index (feed.go).
func (s *Store) viewCommitted(fn func(tx *bolt.Tx) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	return s.db.View(fn)
}

// acquire marks id's body busy (one writer or verifier at a time).
// idleLocked reports, with s.mu held, whether the store may be replaced whole (Wipe, a
// restore's swap): ErrClosed once it is closed, ErrBusy while a body is received or
// verified.
func (s *Store) idleLocked() error {
	if s.closed {
		return ErrClosed
	}
	s.busyMu.Lock()
	n := len(s.busy)
	s.busyMu.Unlock()
	if n > 0 {
		return fmt.Errorf("%w: %d bodies in use", ErrBusy, n)
	}
	return nil
}

func (s *Store) acquire(id string) error {
	s.busyMu.Lock()
	defer s.busyMu.Unlock()
	if _, ok := s.busy[id]; ok {
		return fmt.Errorf("%w: %s", ErrBusy, id)
	}
	s.busy[id] = struct{}{}
	return nil
}

func (s *Store) release(id string) {
	s.busyMu.Lock()
	delete(s.busy, id)
	s.busyMu.Unlock()
}

// ParseID checks that id is "<origin>-<seq>" as MakeID makes it (so it is also a safe
// file name) and returns its two parts; otherwise an error wrapping ErrInvalid.
func ParseID(id string) (origin, seq uint64, err error) {
	o, q, ok := strings.Cut(id, "-")
	if ok {
		origin, err = strconv.ParseUint(o, 10, 64)
		if err == nil {
			seq, err = strconv.ParseUint(q, 10, 64)
		}
	}
	if !ok || err != nil || seq == 0 || strconv.FormatUint(origin, 10) != o || strconv.FormatUint(seq, 10) != q {
		return 0, 0, fmt.Errorf("%w: message id %q", ErrInvalid, id)
	}
	return origin, seq, nil
}

// MakeID returns the ID of the message whose "new" event is (origin, seq).
func MakeID(origin, seq uint64) string { return fmt.Sprintf("%d-%d", origin, seq) }

// BodyPath returns where the body of id is (or would be) stored, for
// diagnostics and tests. Do not write to it.
func (s *Store) BodyPath(id string) string {
	h := sha256.Sum256([]byte(id))
	return filepath.Join(s.dir, "bodies", hex.EncodeToString(h[:1]), id)
}

func u64(v uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return b[:]
}

func eventKey(origin, seq uint64) []byte { return append(u64(origin), u64(seq)...) }

// cursor returns the highest applied seq of origin.
func cursor(tx *bolt.Tx, origin uint64) uint64 {
	if v := tx.Bucket(bktCursors).Get(u64(origin)); len(v) == 8 {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

// getRecord returns the stored record of id, nil when unknown.
func getRecord(tx *bolt.Tx, id string) (*record, error) {
	v := tx.Bucket(bktMeta).Get([]byte(id))
	if v == nil {
		return nil, nil
	}
	var r record
	if err := decodeRecord(v, &r); err != nil {
		return nil, fmt.Errorf("mailstore: decode %s: %w", id, err)
	}
	return &r, nil
}

// putRecord stores nw (replacing old, nil when new) and keeps the stats and
// the missing set in step.
func putRecord(tx *bolt.Tx, old, nw *record) error {
	var dm, db int64
	if old.counted() {
		dm, db = dm-1, db-old.Size
	}
	if nw.counted() {
		dm, db = dm+1, db+nw.Size
	}
	if dm != 0 || db != 0 {
		info := tx.Bucket(bktInfo)
		var m, b int64
		if v := info.Get(keyStats); len(v) == 16 {
			m, b = int64(binary.BigEndian.Uint64(v)), int64(binary.BigEndian.Uint64(v[8:]))
		}
		if err := info.Put(keyStats, append(u64(uint64(m+dm)), u64(uint64(b+db))...)); err != nil {
			return err
		}
	}
	id := []byte(nw.ID)
	var err error
	if nw.counted() && !nw.HaveBody {
		err = tx.Bucket(bktMissing).Put(id, nil)
	} else {
		err = tx.Bucket(bktMissing).Delete(id)
	}
	if err != nil {
		return err
	}
	v, err := marshalRecord(nw)
	if err != nil {
		return err
	}
	return tx.Bucket(bktMeta).Put(id, v)
}

// dropRecord removes old's record, keeping the stats and the missing set in step.
func dropRecord(tx *bolt.Tx, old *record) error {
	if err := putRecord(tx, old, &record{Meta: Meta{ID: old.ID}, Purged: true}); err != nil {
		return err
	}
	return tx.Bucket(bktMeta).Delete([]byte(old.ID))
}

// putEvent appends ev to its origin's log and advances the cursor.
func putEvent(tx *bolt.Tx, ev Event) error {
	v, err := AppendEventJSON(make([]byte, 0, 512), &ev)
	if err != nil {
		return err
	}
	if err := tx.Bucket(bktEvents).Put(eventKey(ev.Origin, ev.Seq), v); err != nil {
		return err
	}
	return tx.Bucket(bktCursors).Put(u64(ev.Origin), u64(ev.Seq))
}

// horizon returns the latest Purge cut-off (zero time when none).
func horizon(tx *bolt.Tx) time.Time {
	if v := tx.Bucket(bktInfo).Get(keyHorizon); len(v) == 8 {
		return time.Unix(0, int64(binary.BigEndian.Uint64(v)))
	}
	return time.Time{}
}
