package mailstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	bolt "go.etcd.io/bbolt"
)

// OpenBody opens the body of id for reading. It fails with ErrNotFound when
// this node does not hold it. A body whose file vanished is marked missing.
func (s *Store) OpenBody(id string) (*os.File, Meta, error) {
	return s.openBody(s.view, id)
}

// openBody is OpenBody through view (Store.view or Store.viewCommitted).
func (s *Store) openBody(view func(func(*bolt.Tx) error) error, id string) (*os.File, Meta, error) {
	m, err := s.get(view, id)
	if err != nil {
		return nil, Meta{}, err
	}
	if !m.HaveBody {
		return nil, Meta{}, fmt.Errorf("%w: body of %s", ErrNotFound, id)
	}
	f, err := os.Open(s.BodyPath(id))
	if errors.Is(err, os.ErrNotExist) {
		_ = s.markMissing(id)
		return nil, Meta{}, fmt.Errorf("%w: body of %s", ErrNotFound, id)
	}
	if err != nil {
		return nil, Meta{}, fmt.Errorf("mailstore: open body: %w", err)
	}
	return f, m, nil
}

// HasBody reports whether this node holds the body of id.
func (s *Store) HasBody(id string) bool {
	m, err := s.Get(id)
	return err == nil && m.HaveBody
}

// Missing lists the messages whose body this node lacks and still wants
// (deleted and purged messages are not listed).
// It reads the committed index without waiting for the intake journal (feed.go):
// a journaled message's body is here, so the journal adds nothing to the list.
func (s *Store) Missing() ([]Meta, error) {
	var out []Meta
	err := s.viewCommitted(func(tx *bolt.Tx) error {
		return tx.Bucket(bktMissing).ForEach(func(k, _ []byte) error {
			r, err := getRecord(tx, string(k))
			if err != nil || r == nil {
				return err
			}
			out = append(out, r.Meta)
			return nil
		})
	})
	return out, err
}

// markMissing records that the body of id is no longer held here.
func (s *Store) markMissing(id string) error {
	changed := false
	err := s.update(func(tx *bolt.Tx) error {
		old, err := getRecord(tx, id)
		if err != nil || old == nil || !old.HaveBody {
			return err
		}
		nw := *old
		nw.HaveBody, changed = false, true
		return putRecord(tx, old, &nw)
	})
	if changed {
		s.notify()
	}
	return err
}

// BodyWriter receives a body from a peer into a partial file. Exactly one
// writer may exist per message; Close it (or Commit) to let go. Its file is opened
// by the first Write (or by Commit), not by BeginBody: a fetcher that begins the
// writers of several bodies before their bytes arrive (mailrepl's bulk fetch) holds
// no descriptor for those still waiting.
type BodyWriter struct {
	s      *Store
	meta   Meta
	part   string   // the partial file's path
	f      *os.File // nil until the first Write
	h      hash.Hash
	n      int64
	bad    error
	closed bool
}

// BeginBody starts or resumes receiving the body of id. An existing partial
// file is reopened: offset is how much of the body it already holds, and the
// sender should start there. It fails with ErrExists when the body is already
// here, ErrNotFound when the message is unknown, deleted or purged, and
// ErrBusy when another writer holds it. It reads the index as the feed does
// (feed.go): a body to fetch is that of a message a peer's events brought.
func (s *Store) BeginBody(id string) (*BodyWriter, int64, error) {
	m, err := s.get(s.viewCommitted, id)
	if err != nil {
		return nil, 0, err
	}
	if m.State == StateDeleted {
		return nil, 0, fmt.Errorf("%w: %s is deleted", ErrNotFound, id)
	}
	if m.HaveBody {
		return nil, 0, fmt.Errorf("%w: %s", ErrExists, id)
	}
	if err := s.acquire(id); err != nil {
		return nil, 0, err
	}
	final := s.BodyPath(id)
	// A crash between the rename of a received body and its commit leaves a
	// good file the index does not know: adopt it rather than fetch it again, in a
	// batch that syncs the file system first, as for a body just received.
	if ok, _ := fileMatches(final, m); ok {
		err := s.commitReceived(id)
		s.release(id)
		if err != nil {
			return nil, 0, err
		}
		return nil, 0, fmt.Errorf("%w: %s", ErrExists, id)
	}
	w := &BodyWriter{s: s, meta: m, part: final + ".part", h: sha256.New()}
	if err := w.resume(); err != nil {
		w.bad = err
		_ = w.Close()
		return nil, 0, fmt.Errorf("mailstore: begin body: %w", err)
	}
	return w, w.n, nil
}

// resume takes up what an earlier writer left in the partial file: it hashes it when
// it is no longer than the body (the sender starts after it), and empties it when it
// is longer. No partial file is nothing to resume.
func (w *BodyWriter) resume() error {
	st, err := os.Stat(w.part)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return err
	case st.Size() > w.meta.Size:
		return os.Truncate(w.part, 0)
	case st.Size() == 0:
		return nil
	}
	f, err := os.Open(w.part)
	if err != nil {
		return err
	}
	defer f.Close()
	w.n, err = io.Copy(w.h, io.NewSectionReader(f, 0, st.Size()))
	return err
}

// open opens the partial file for writing after what it holds (w.n bytes).
func (w *BodyWriter) open() error {
	if w.f != nil {
		return nil
	}
	f, err := os.OpenFile(w.part, os.O_WRONLY|os.O_CREATE, 0o640)
	if err == nil {
		_, err = f.Seek(w.n, io.SeekStart)
		if err != nil {
			_ = f.Close()
		}
	}
	if err != nil {
		return fmt.Errorf("mailstore: body %s: %w", w.meta.ID, err)
	}
	w.f = f
	return nil
}

// Meta returns the metadata the body is checked against.
func (w *BodyWriter) Meta() Meta { return w.meta }

// Write appends p to the partial body. Writing past the expected size is
// ErrChecksum, and the partial file is then discarded at Close.
func (w *BodyWriter) Write(p []byte) (int, error) {
	if w.closed {
		return 0, ErrClosed
	}
	if w.bad != nil {
		return 0, w.bad
	}
	if w.n+int64(len(p)) > w.meta.Size {
		w.bad = fmt.Errorf("%w: %s: more than %d bytes", ErrChecksum, w.meta.ID, w.meta.Size)
		return 0, w.bad
	}
	if err := w.open(); err != nil {
		w.bad = err
		return 0, err
	}
	n, err := w.f.Write(p)
	w.h.Write(p[:n])
	w.n += int64(n)
	if err != nil {
		w.bad = err
	}
	return n, err
}

// Commit checks the received body against the metadata's size and SHA-256,
// makes it durable and marks the message as having its body. On a mismatch
// the partial file is deleted and ErrChecksum returned. The writer is closed
// afterwards in every case.
func (w *BodyWriter) Commit() error {
	if w.closed {
		return ErrClosed
	}
	id := w.meta.ID
	if w.bad == nil && (w.n != w.meta.Size || hex.EncodeToString(w.h.Sum(nil)) != w.meta.SHA256) {
		w.bad = fmt.Errorf("%w: %s: got %d bytes", ErrChecksum, id, w.n)
	}
	if w.bad != nil {
		err := w.bad
		_ = w.Close()
		return err
	}
	w.closed = true
	defer w.s.release(id)
	// The body is checked: it takes its final name, not synced, and its batch marks
	// it held once a syncfs made it and its name durable (recv.go). A crash before
	// the mark leaves a file the index does not know, which BeginBody re-hashes and
	// adopts or replaces. The file stays open past its rename and its batch: once the
	// batch has made it durable, its pages leave the page cache through it
	// (pagecache.go).
	final := w.s.BodyPath(id)
	if err := w.open(); err != nil { // a body of no bytes, or one the partial file held whole, had no Write
		return fmt.Errorf("mailstore: commit body: %w", err)
	}
	// A write error the close could report is the batch's syncfs's to report too.
	defer w.f.Close()
	if err := os.Rename(w.part, final); err != nil {
		return fmt.Errorf("mailstore: commit body: %w", err)
	}
	if err := w.s.commitReceived(id); err != nil {
		return err
	}
	dropCached(w.f)
	return nil
}

// Close ends the writer without committing. The partial file is kept, so a
// later BeginBody resumes it, unless a write failed or went past the size.
// It is idempotent.
func (w *BodyWriter) Close() error {
	if w.closed {
		return nil
	}
	w.closed = true
	var err error
	if w.f != nil {
		err = w.f.Close()
	}
	if w.bad != nil {
		_ = os.Remove(w.part)
	}
	w.s.release(w.meta.ID)
	return err
}

// fileMatches reports whether the file at path has m's size and SHA-256.
func fileMatches(path string, m Meta) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return false, err
	}
	return n == m.Size && hex.EncodeToString(h.Sum(nil)) == m.SHA256, nil
}

// Verify re-hashes the body of id. On a mismatch (or a vanished file) it moves
// the file to corrupt/, marks the body missing, so that replication fetches it
// again from a peer, and returns ErrCorrupt. It returns ErrNotFound when this
// node does not hold the body and ErrBusy while it is being received.
func (s *Store) Verify(id string) error {
	m, err := s.Get(id)
	if err != nil {
		return err
	}
	if !m.HaveBody {
		return fmt.Errorf("%w: body of %s", ErrNotFound, id)
	}
	if err := s.acquire(id); err != nil {
		return err
	}
	defer s.release(id)
	path := s.BodyPath(id)
	ok, err := fileMatches(path, m)
	if ok {
		return nil
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("mailstore: verify %s: %w", id, err)
	}
	if !s.HasBody(id) { // deleted or purged meanwhile
		return nil
	}
	_ = os.Rename(path, filepath.Join(s.dir, "corrupt", id))
	if err := s.markMissing(id); err != nil {
		return err
	}
	return fmt.Errorf("%w: %s", ErrCorrupt, id)
}

// Scrub verifies every body held here (see Verify) and returns the IDs found
// corrupt. Bodies busy with a transfer are skipped.
func (s *Store) Scrub(ctx context.Context) (corrupt []string, err error) {
	var ids []string
	err = s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bktMeta).ForEach(func(k, _ []byte) error {
			r, err := getRecord(tx, string(k))
			if err == nil && r != nil && r.HaveBody {
				ids = append(ids, r.ID)
			}
			return err
		})
	})
	if err != nil {
		return nil, err
	}
	for _, id := range ids {
		if err := ctx.Err(); err != nil {
			return corrupt, err
		}
		switch err := s.Verify(id); {
		case errors.Is(err, ErrCorrupt):
			corrupt = append(corrupt, id)
		case err == nil, errors.Is(err, ErrBusy), errors.Is(err, ErrNotFound):
		default:
			return corrupt, err
		}
	}
	return corrupt, nil
}
