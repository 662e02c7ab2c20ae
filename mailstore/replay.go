package mailstore

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	bolt "go.etcd.io/bbolt"

	"github.com/pmgcm/pmgcm/internal/dirsync"
)

// replayJournal finishes what a crash left in the intake journal (intake.go), at
// Open, after the spool's recovery and before tmp/ is emptied, with no other user of
// the store: every record not yet in the index is indexed, with its body written
// from the record (or linked from its synced spooled file); the body of every
// indexed record that still needs it is written again from the record (a large one,
// synced on its own, is linked again from its spooled name if its final name is
// gone). Then a syncfs makes all of it durable and the segments are removed.
//
// A segment ends at its first short or damaged record: a torn last group, never
// acknowledged. A damaged record followed by a later segment means records the
// journal acknowledged are unreadable: Open fails and says which file to move aside.
func (s *Store) replayJournal(db *bolt.DB) error {
	segs, err := listSegments(s.journalDir())
	if err != nil || len(segs) == 0 {
		return err
	}
	// Every segment is read through first, so that a refusal changes nothing.
	for i, p := range segs[:len(segs)-1] {
		torn, err := scanSegment(p)
		if err != nil {
			return fmt.Errorf("mailstore: replay intake journal %s: %w", p, err)
		}
		if torn != nil {
			return fmt.Errorf("mailstore: intake journal %s: %w, and later segments follow (%s): "+
				"the messages from there on cannot be recovered in order; to open the store "+
				"without them (they are lost on this node), move %s and the later segments aside",
				p, torn, strings.Join(segs[i+1:], ", "), p)
		}
	}
	for _, p := range segs {
		if _, err := s.replaySegment(db, p); err != nil {
			return fmt.Errorf("mailstore: replay intake journal %s: %w", p, err)
		}
	}
	if err := s.syncFS(); err != nil {
		return fmt.Errorf("mailstore: replay intake journal: %w", err)
	}
	for _, p := range segs {
		if err := os.Remove(p); err != nil {
			return fmt.Errorf("mailstore: replay intake journal: %w", err)
		}
	}
	// Durable removals: a segment back after a power loss must not meet a store
	// wiped since (intake.go, checkpoint).
	return dirsync.Sync(s.journalDir())
}

// listSegments returns the segment files of dir in order.
func listSegments(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("mailstore: intake journal: %w", err)
	}
	var out []string
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".seg") {
			out = append(out, filepath.Join(dir, e.Name()))
		}
	}
	sort.Strings(out) // fixed-width numbers
	return out, nil
}

// scanSegment reads the segment at p through; torn is the damage that ends it early.
func scanSegment(p string) (torn, err error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	err = readSegment(f, func(*jrecord) error { return nil })
	if errors.Is(err, errTorn) {
		return err, nil
	}
	return nil, err
}

// replaySegment replays one segment in one transaction; torn is the damage that
// ended it early (nil when it ended cleanly).
func (s *Store) replaySegment(db *bolt.DB, p string) (torn, err error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		rerr := readSegment(f, func(r *jrecord) error { return s.replayRecord(tx, r) })
		if errors.Is(rerr, errTorn) {
			torn = rerr
			return nil
		}
		return rerr
	})
	return torn, err
}

// replayRecord replays one record in tx.
func (s *Store) replayRecord(tx *bolt.Tx, r *jrecord) error {
	m := r.meta
	final := s.BodyPath(m.ID)
	cur := cursor(tx, m.Origin)
	switch {
	case m.Seq == cur+1:
		if err := s.placeReplayed(r, final); err != nil {
			return err
		}
		return indexTx(tx, m, "", r.at, false)
	case m.Seq <= cur:
		old, err := getRecord(tx, m.ID)
		if err != nil {
			return err
		}
		if !old.counted() || !old.HaveBody || old.SHA256 != m.SHA256 {
			return nil // deleted, purged or compacted since: nothing to bring back
		}
		if r.kind == recInline {
			// Always written again, never trusted as read back: after a writeback
			// error (a failed syncfs stopped the journal) the page cache can hold a
			// body the disk lost, clean. The replay's syncfs covers the new file.
			return writeBody(final, r.body)
		}
		if bodyMatches(final, m) {
			return nil
		}
		// A synced body whose final name a crash took before it was synced (by the
		// spool's flush or a replay's syncfs): its spooled name still holds it.
		spooled := filepath.Join(s.dir, "tmp", r.spooled)
		if bodyMatches(spooled, m) {
			return linkNew(spooled, final)
		}
		return nil // gone from both: Check lists it as missing
	default:
		return fmt.Errorf("%w: journaled message %s after sequence %d", ErrGap, m.ID, cur)
	}
}

// placeReplayed puts the body of a record being indexed at its final name.
func (s *Store) placeReplayed(r *jrecord, final string) error {
	if r.kind == recInline {
		return writeBody(final, r.body)
	}
	spooled := filepath.Join(s.dir, "tmp", r.spooled)
	if !bodyMatches(spooled, r.meta) {
		return fmt.Errorf("%w: the synced body file %s of %s does not match its record", ErrCorrupt, spooled, r.meta.ID)
	}
	return linkNew(spooled, final)
}

// bodyMatches reports whether the file at p has m's size and SHA-256.
func bodyMatches(p string, m Meta) bool {
	f, err := os.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	return err == nil && n == m.Size && hex.EncodeToString(h.Sum(nil)) == m.SHA256
}

// writeBody replaces the file at p with body, not synced: the replay's syncfs, or for
// an accepted body indexed from memory the journal's checkpoint, syncs it.
func writeBody(p string, body []byte) error {
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, bytes.NewReader(body))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
