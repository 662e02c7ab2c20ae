package mailstore

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"

	bolt "go.etcd.io/bbolt"
)

// Received bodies under spooled names: one fsync of its own per replicated body.
//
// A body received from a peer (BodyWriter) is written to bodies/xx/<id>.part, so that
// a broken transfer resumes (after a restart too). At Commit, once it is checked, it
// is hard-linked to a spooled name in tmp/ (recv-<id>-<n>), renamed to its final name
// and its file fsynced: its one fsync. Its batch (group.go) records the spooled name
// in bucket "spool" with the body's mark as held and fsyncs tmp/ once for the whole
// batch before it commits, as for an Accept (spool.go); the final name's directory is
// synced by the background flush, once per directory for many bodies. Until then the
// spooled name, durable and recorded in the committed index, is the body's durable
// name. (Before, each body fsynced its own directory: one fsync per body more.)
//
// Crash points (as in spool.go: each directory block written or not, independently):
//   - before the commit: the index does not mark the body held and has no entry; a
//     final name that reached the disk names a file BeginBody re-hashes and adopts
//     (or replaces, when its data did not reach the disk); a .part is resumed; the
//     spooled name goes with the rest of tmp/ at Open.
//   - after the commit: the entry, the spooled name and the body's data are durable
//     (the file was fsynced and tmp/ synced before the commit); Open links the
//     spooled name to the final name unless that already is the same file
//     (recoverSpool).
//   - after the flush's directory fsync: as for an Accept.
//
// A message deleted or purged before its body's batch: the batch records nothing and
// the body's names are removed. A body committed again before the flush of its first
// commit (marked missing by Verify or OpenBody, then fetched again): the entry names
// the new spooled name, and the earlier flush, which deletes an entry only while it
// names the flushed name, leaves it for its own flush.

// recvSeq numbers the spooled names of received bodies (tmp/ is emptied at Open, so
// the names need only be unique within the process).
var recvSeq atomic.Uint64

// placeReceived gives the checked body in f (at final+".part") a spooled name in tmp/
// and its final name, then fsyncs it. It returns the spooled name once it exists, even
// with an error (the caller removes it).
func (s *Store) placeReceived(f *os.File, final string) (name string, err error) {
	name = "recv-" + filepath.Base(final) + "-" + strconv.FormatUint(recvSeq.Add(1), 10)
	part := final + ".part"
	if err := os.Link(part, filepath.Join(s.dir, "tmp", name)); err != nil {
		return "", err
	}
	if err := os.Rename(part, final); err != nil {
		return name, err
	}
	return name, f.Sync()
}

// commitSpooled marks the received body of id, in place under its final name and the
// spooled name name (its data fsynced), as held and records the spooled name, in a
// batch that fsyncs tmp/ before it commits (group.go); the final name is left to the
// background flush. A message deleted, purged or unknown meanwhile gets its names
// removed instead.
func (s *Store) commitSpooled(id, name string) error {
	tmp := filepath.Join(s.dir, "tmp")
	keep, drop := false, false
	err := s.groupCommit(&commitReq{
		apply: func(tx *bolt.Tx) error {
			keep, drop = false, false
			old, err := getRecord(tx, id)
			if err != nil {
				return err
			}
			if old == nil || !old.counted() {
				drop = true
				return nil
			}
			if old.HaveBody {
				return nil // held already (the same checked content): nothing to record
			}
			nw := *old
			nw.HaveBody, keep = true, true
			if err := putRecord(tx, old, &nw); err != nil {
				return err
			}
			return tx.Bucket(bktSpool).Put([]byte(id), []byte(name))
		},
		place:   func() (string, error) { return tmp, nil },
		unplace: func() error { return nil },
		after: func() {
			if keep {
				s.spoolAdd(spooledBody{id: id, name: name, dir: filepath.Dir(s.BodyPath(id))})
			}
		},
	})
	if err != nil || !keep {
		_ = os.Remove(filepath.Join(tmp, name))
	}
	if err != nil {
		return fmt.Errorf("mailstore: commit body: %w", err)
	}
	if drop {
		s.removeBodies([]string{id})
	}
	return nil
}
