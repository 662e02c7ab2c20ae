package mailstore

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/pmgcm/pmgcm/internal/dirsync"
)

// A restore (from a backup) replaces a store's content whole, and a refused or failed
// restore must leave it exactly as it was. So the backup's messages go into a staging
// store beside the live one (<dir>.restore), and Commit swaps the two directories:
//
//	rename <dir> -> <dir>.old; rename <dir>.restore -> <dir>; fsync the parent; remove <dir>.old
//
// Open finishes or undoes a swap a crash interrupted: <dir>.old without <dir> is put
// back (the restore is lost, the store is as it was), <dir>.old beside <dir> is removed
// (the swap was done), and a leftover <dir>.restore is removed (never committed).

func stagingDir(dir string) string { return dir + ".restore" }
func swapOldDir(dir string) string { return dir + ".old" }

// removeOldContent removes the content a restore replaced; tests watch it.
var removeOldContent = os.RemoveAll

// recoverSwap is Open's part of the swap protocol above.
func recoverSwap(dir string) error {
	old := swapOldDir(dir)
	if _, err := os.Lstat(old); err == nil {
		if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
			if err := os.Rename(old, dir); err != nil {
				return fmt.Errorf("mailstore: undo an interrupted restore: %w", err)
			}
		} else if err := os.RemoveAll(old); err != nil {
			return fmt.Errorf("mailstore: finish an interrupted restore: %w", err)
		}
	}
	if err := os.RemoveAll(stagingDir(dir)); err != nil {
		return fmt.Errorf("mailstore: remove an unfinished restore: %w", err)
	}
	return nil
}

// Staging is an empty store beside a live one, which a restore fills (Import,
// SetState) while the live store keeps serving. Commit replaces the live store's
// content with it in one step; Abort discards it. Until Commit, the live store is
// untouched. One Staging at a time per store.
type Staging struct {
	live *Store
	st   *Store
	// mark is the live store's cursor of its local origin at BeginRestore: messages
	// accepted there later (SMTP goes on during a restore) are carried over at Commit,
	// never dropped.
	origin, mark uint64
	done         bool
}

// BeginRestore opens an empty staging store for a restore of s.
func (s *Store) BeginRestore() (*Staging, error) {
	if !s.restoring.CompareAndSwap(false, true) {
		return nil, fmt.Errorf("%w: a restore is already under way", ErrBusy)
	}
	g := &Staging{live: s, origin: s.opts.LocalCID()}
	err := s.view(func(tx *bolt.Tx) error {
		g.mark = cursor(tx, g.origin)
		return nil
	})
	if err == nil {
		dir := stagingDir(s.dir)
		if err = os.RemoveAll(dir); err == nil {
			g.st, err = Open(dir, s.opts)
		}
	}
	if err != nil {
		s.restoring.Store(false)
		return nil, fmt.Errorf("mailstore: begin restore: %w", err)
	}
	return g, nil
}

// Import stores a restored message in the staging store (see Store.Import).
func (g *Staging) Import(from string, to []string, received time.Time, r io.Reader) (Meta, error) {
	return g.st.Import(from, to, received, r)
}

// SetState sets the state of a message of the staging store (see Store.SetState).
func (g *Staging) SetState(id, state string) (Meta, error) { return g.st.SetState(id, state) }

// Stats returns the staging store's message count and bytes.
func (g *Staging) Stats() (messages, bytes int64) { return g.st.Stats() }

// Abort discards the staging store; the live store is as it was. It is idempotent,
// and a no-op after Commit.
func (g *Staging) Abort() error {
	if g.done {
		return nil
	}
	g.done = true
	defer g.live.restoring.Store(false)
	err := g.st.Close()
	if rerr := os.RemoveAll(g.st.dir); err == nil {
		err = rerr
	}
	return err
}

// Commit replaces the live store's content with the staging store's: messages,
// events, cursors and stats. Messages the live store accepted since BeginRestore are
// carried over (with new IDs, as every restored message). It fails with ErrBusy, and
// changes nothing, while a body of the live store is being received or verified; the
// Staging may then be committed again or aborted. Readers and writers of the live
// store wait for the swap; an Accept whose body was being spooled meanwhile fails
// (its SMTP client is told to retry, never 250).
func (g *Staging) Commit() error {
	if g.done {
		return fmt.Errorf("%w: the restore was already committed or aborted", ErrInvalid)
	}
	s := g.live
	// The live journal indexed and checkpointed: nothing of the content being
	// replaced stays in it (intake.go); Accepts wait, then fail on the new content.
	if err := s.hold(); err != nil {
		s.releaseJournal()
		return fmt.Errorf("mailstore: restore: %w", err)
	}
	defer s.releaseJournal()
	old, err := g.swap()
	if g.done {
		if old != "" {
			// The content replaced, with as many files as it held messages: removed
			// after the lock is let go, so that the new content serves meanwhile, and
			// before the next restore may begin (restoring), which would use the name.
			_ = removeOldContent(old)
		}
		s.restoring.Store(false)
	}
	return err
}

// swap puts the staged content in place of the live one under the store's lock, and
// returns the directory the live content was moved to once it is no longer needed
// ("" while it may be: a failed swap puts it back).
func (g *Staging) swap() (string, error) {
	s := g.live
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.idleLocked(); err != nil {
		return "", err
	}
	if err := g.carryOver(); err != nil {
		return "", fmt.Errorf("mailstore: restore: carry over the messages received meanwhile: %w", err)
	}
	g.done = true // Commit ends the Staging (restoring) whatever happens next
	// The live content is replaced (its messages received meanwhile were carried
	// over): its pending spooled names are not flushed; reopen recovers whatever
	// the directory it opens has in its bucket.
	s.spoolReset()
	defer s.bumpGen() // the swap's tmp/ in place (or the old one reopened): see accept
	if err := g.st.Close(); err != nil {
		_ = os.RemoveAll(g.st.dir)
		return "", fmt.Errorf("mailstore: restore: %w", err)
	}
	if err := s.db.Close(); err != nil {
		_ = os.RemoveAll(g.st.dir)
		return "", s.reopen(fmt.Errorf("mailstore: restore: %w", err))
	}
	old := swapOldDir(s.dir)
	if err := os.Rename(s.dir, old); err != nil {
		_ = os.RemoveAll(g.st.dir)
		return "", s.reopen(fmt.Errorf("mailstore: restore: %w", err))
	}
	if err := os.Rename(g.st.dir, s.dir); err != nil {
		if uerr := os.Rename(old, s.dir); uerr != nil {
			s.closed = true
			return "", fmt.Errorf("mailstore: restore: %w; and putting the store back failed: %v: restart the daemon, which puts it back", err, uerr)
		}
		_ = os.RemoveAll(g.st.dir)
		return "", s.reopen(fmt.Errorf("mailstore: restore: %w", err))
	}
	if err := dirsync.Sync(filepath.Dir(s.dir)); err != nil {
		return "", s.reopen(err)
	}
	if err := s.reopen(nil); err != nil {
		return "", err
	}
	s.notify()
	return old, nil
}

// reopen opens s.db again after a swap (or a failed one) and returns cause; if the
// index cannot be opened, the store is closed and the error says so.
func (s *Store) reopen(cause error) error {
	err := s.ensureDirs()
	var db *bolt.DB
	if err == nil {
		db, err = s.openIndex()
	}
	if err != nil {
		s.closed = true
		s.chMu.Lock()
		if !s.chDone {
			s.chDone = true
			close(s.changed)
		}
		s.chMu.Unlock()
		return errors.Join(cause, fmt.Errorf("mailstore: reopen the index after a restore: %w: restart the daemon", err))
	}
	s.db = db
	return cause
}

// carryOver copies into the staging store the messages the live store accepted since
// BeginRestore (with their state). s.mu is write-held: it reads s.db directly.
func (g *Staging) carryOver() error {
	s := g.live
	var msgs []record
	err := s.db.View(func(tx *bolt.Tx) error {
		prefix := u64(g.origin)
		c := tx.Bucket(bktEvents).Cursor()
		for k, v := c.Seek(eventKey(g.origin, g.mark+1)); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			var ev Event
			if err := DecodeEventJSON(v, &ev); err != nil {
				return fmt.Errorf("decode event: %w", err)
			}
			if ev.Kind != KindNew {
				continue
			}
			r, err := getRecord(tx, ev.MsgID)
			if err != nil {
				return err
			}
			if r.counted() && r.HaveBody {
				msgs = append(msgs, *r)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, r := range msgs {
		f, err := os.Open(s.BodyPath(r.ID))
		if err != nil {
			return err
		}
		m, err := g.st.Import(r.From, r.To, r.Received, f)
		_ = f.Close()
		if err != nil {
			return err
		}
		if r.State != StateQuarantined {
			if _, err := g.st.SetState(m.ID, r.State); err != nil {
				return err
			}
		}
	}
	return nil
}
