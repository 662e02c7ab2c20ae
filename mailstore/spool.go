package mailstore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Spooled names of accepted bodies.
//
// An accepted body too large for memory (inline.go: above maxInline, or received while
// the budget of bodies in memory is spent) is written to a spooled name in tmp/ and
// fsynced there before the journal's record names it (intake.go); the final name's
// directory fsync below makes the final name durable. (Earlier
// builds gave a body received from a peer a spooled name too; its batch now syncs the
// file system instead, recv.go. Open still recovers the entries they left.)
//
// In its batch (group.go) the body records the spooled name in bucket "spool" (ID -> name)
// of the batch transaction, hard-links the spooled file to the body's final name
// (bodies/xx/ID); the record in the journal names the spooled file. The final name is
// not synced then: until it is, the spooled name, durable and recorded in the
// committed index, is the body's durable name. Later, in the background (flushDelay
// after the first pending one, or at once when flushMax are pending, and at Close),
// the body directories of the pending ones are fsynced (once each), their entries
// deleted from the bucket in a transaction, and only then the spooled names unlinked.
//
// Readers (OpenBody, replication, Check, backup, a restore's carry-over) only ever
// use the final name: it exists (in the page cache at least) from before the commit
// on, and Open recreates any a crash left out before anything reads.
//
// Crash points, on a file system without a journal (each directory's block written
// or not, independently, whatever order the calls were made in):
//   - before the commit: the message is unacknowledged and has no record; a final
//     name that reached the disk is an orphan file no record names (as a rename
//     before the commit left one before), replaced by the next Accept of that ID;
//     the spooled name is removed with the rest of tmp/.
//   - after the commit, before the body directory's fsync: the entry is in the
//     bucket and the spooled name on disk (tmp/ was fsynced before the commit);
//     the final name may be missing, or be an orphan of an earlier crash. Open
//     links the spooled name to the final name unless that already is the same
//     file, fsyncs the body directories, clears the bucket, then empties tmp/.
//   - after the directory fsync: the final name is durable; the entry and the
//     spooled name may or may not be gone (entry first, then name): Open finds the
//     final name the same file, or finds no entry and removes the spooled name.
//
// An entry whose message was deleted or purged meanwhile is dropped without a link.
// The bucket is new in this version: a data directory of 1ca55cd has none, and
// Open creates it empty. A 1ca55cd binary ignores it; after a clean stop its final
// names are all there, but a downgrade right after a power loss would drop the
// bodies whose final name had not reached the disk.

var bktSpool = []byte("spool") // id -> spooled file name in tmp/ (not yet synced in bodies/)

const (
	// flushDelay is how long a spooled name waits at most for the background flush.
	flushDelay = 5 * time.Second
	// flushMax pending names start a flush at once.
	flushMax = 8192
)

// spooledBody is a committed body whose final name is not known durable yet.
type spooledBody struct {
	id   string
	name string // base name in tmp/
	dir  string // the final name's directory
}

// spooler holds the pending spooled names of a store.
type spooler struct {
	mu      sync.Mutex
	pending []spooledBody
	gen     uint64 // bumped when the store's content is replaced (Wipe, restore)
	timer   *time.Timer
	// token is held by the one flush running (a channel, so that Close can wait
	// for it).
	token chan struct{}
	// started is set while a flush started for a full list (flushMax) has not taken
	// the pending names yet: one such flush is enough, however many batches commit
	// meanwhile (a disk stall must not pile up waiting goroutines).
	started bool
	// noFlush, set by tests, leaves every entry pending (as a crash would).
	noFlush bool
}

// spoolAdd records a committed body's spooled name for the background flush. It is
// called by the batch, with s.mu read-held.
func (s *Store) spoolAdd(b spooledBody) {
	sp := &s.spool
	sp.mu.Lock()
	defer sp.mu.Unlock()
	sp.pending = append(sp.pending, b)
	if sp.noFlush {
		return
	}
	switch {
	case len(sp.pending) >= flushMax:
		if sp.timer != nil {
			sp.timer.Stop()
			sp.timer = nil
		}
		if !sp.started {
			sp.started = true
			go s.flushSpool()
		}
	case sp.timer == nil:
		sp.timer = time.AfterFunc(flushDelay, s.flushSpool)
	}
}

// spoolReset forgets the pending names (their store content was replaced); s.mu is
// write-held.
func (s *Store) spoolReset() {
	sp := &s.spool
	sp.mu.Lock()
	sp.pending = nil
	sp.gen++
	if sp.timer != nil {
		sp.timer.Stop()
		sp.timer = nil
	}
	sp.mu.Unlock()
}

// flushSpool makes the final names of the pending bodies durable, clears their
// entries, then unlinks their spooled names. A failure puts them back for a later
// try (they stay safe meanwhile: their entries are kept).
func (s *Store) flushSpool() {
	sp := &s.spool
	sp.token <- struct{}{}
	defer func() { <-sp.token }()
	sp.mu.Lock()
	if sp.timer != nil {
		sp.timer.Stop()
		sp.timer = nil
	}
	batch, gen := sp.pending, sp.gen
	sp.pending = nil
	sp.started = false
	if sp.noFlush {
		sp.pending, batch = batch, nil
	}
	sp.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	if err := s.flushBatch(batch, gen); err != nil {
		sp.mu.Lock()
		if sp.gen == gen {
			sp.pending = append(batch, sp.pending...)
			if sp.timer == nil && !s.isClosed() {
				sp.timer = time.AfterFunc(flushDelay, s.flushSpool)
			}
		}
		sp.mu.Unlock()
	}
}

// isClosed reports whether Close has run.
func (s *Store) isClosed() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.closed
}

// current reports, with s.mu held, whether the store still has the content of gen.
func (s *Store) current(gen uint64) bool {
	s.spool.mu.Lock()
	defer s.spool.mu.Unlock()
	return !s.closed && s.spool.gen == gen
}

// currentLocked is current, taking s.mu for the check only.
func (s *Store) currentLocked(gen uint64) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.current(gen)
}

// flushBatch runs the three steps of a flush for batch (taken at gen).
func (s *Store) flushBatch(batch []spooledBody, gen uint64) error {
	dirs := map[string]struct{}{}
	for _, b := range batch {
		dirs[b.dir] = struct{}{}
	}
	// No lock across the syncs and the unlinks below (a Wipe, a restore or Close
	// would wait for them, and every reader behind it): a store whose content was
	// replaced meanwhile is seen by the check of the commit and the one before the
	// unlinks; fsyncing a directory of the new content is harmless, and the spooled
	// names are unique within the process (tmp/ is emptied at Open).
	if !s.currentLocked(gen) {
		return nil
	}
	if err := syncDirs(dirs); err != nil {
		return err
	}
	req := &commitReq{}
	req.apply = func(tx *bolt.Tx) error {
		req.quiet = true
		if !s.current(gen) {
			return nil
		}
		bk := tx.Bucket(bktSpool)
		for _, b := range batch {
			// A body committed again since (recv.go) has an entry naming its
			// new spooled name: that one waits for its own flush.
			if string(bk.Get([]byte(b.id))) != b.name {
				continue
			}
			if err := bk.Delete([]byte(b.id)); err != nil {
				return err
			}
		}
		return nil
	}
	if err := s.groupCommit(req); err != nil {
		return err
	}
	if !s.currentLocked(gen) {
		return nil
	}
	tmp := filepath.Join(s.dir, "tmp")
	for _, b := range batch {
		_ = os.Remove(filepath.Join(tmp, b.name))
	}
	return nil
}

// closeSpool flushes what is pending (unless a test holds it, as a crash would) and
// stops the timer; called by Close before it takes s.mu.
func (s *Store) closeSpool() {
	s.flushSpool()
	sp := &s.spool
	sp.mu.Lock()
	if sp.timer != nil {
		sp.timer.Stop()
		sp.timer = nil
	}
	sp.mu.Unlock()
}

// recoverSpool finishes what a crash (or a failed flush) left in bucket "spool" of
// db (see the comment at the top): it links each spooled name still there to its
// final name unless that already is the same file, fsyncs the body directories of
// every entry, and clears the bucket. It runs at Open before tmp/ is emptied, with
// no other user of the store.
func (s *Store) recoverSpool(db *bolt.DB) error {
	type entry struct{ id, name string }
	var entries []entry
	keep := map[string]bool{}
	err := db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bktSpool).ForEach(func(k, v []byte) error {
			id := string(k)
			entries = append(entries, entry{id, string(v)})
			r, err := getRecord(tx, id)
			if err != nil {
				return err
			}
			keep[id] = r.counted() && r.HaveBody
			return nil
		})
	})
	if err != nil || len(entries) == 0 {
		return err
	}
	dirs := map[string]struct{}{}
	for _, e := range entries {
		if _, _, err := ParseID(e.id); err != nil || e.name != filepath.Base(e.name) || e.name == "." || e.name == ".." {
			return fmt.Errorf("mailstore: spooled body %q (%q): bad entry", e.id, e.name)
		}
		final := s.BodyPath(e.id)
		dirs[filepath.Dir(final)] = struct{}{}
		if !keep[e.id] {
			continue
		}
		spooled := filepath.Join(s.dir, "tmp", e.name)
		if err := linkSpooled(spooled, final); err != nil {
			return fmt.Errorf("mailstore: recover spooled body of %s: %w", e.id, err)
		}
	}
	if err := syncDirs(dirs); err != nil {
		return err
	}
	return db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bktSpool)
		for _, e := range entries {
			if err := bk.Delete([]byte(e.id)); err != nil {
				return err
			}
		}
		return nil
	})
}

// linkSpooled makes final name the file spooled names, unless spooled is gone (its
// final name was durable before it was unlinked) or final already is that file.
func linkSpooled(spooled, final string) error {
	si, err := os.Stat(spooled)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi, err := os.Stat(final); err == nil && os.SameFile(si, fi) {
		return nil
	}
	if err := os.Remove(final); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return os.Link(spooled, final)
}
