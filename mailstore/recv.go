package mailstore

import (
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// Received bodies: one syncfs per batch.
//
// A body received from a peer (BodyWriter) is written to bodies/xx/<id>.part, so that
// a broken transfer resumes (after a restart too). At Commit, once it is checked, it
// is renamed to its final name, neither file nor directory synced, and queued for a
// batch (group.go) that marks it held. A batch with a received body in it makes the
// store's file system durable with one syncfs(2) before it commits: the data, inode
// and name of every body of the batch, with one flush of the device. (Before, each
// body fsynced its file, and its batch tmp/, where a spooled name kept it until the
// background flush synced its directory: a flush of the device per body, and a third
// of a joining node's CPU in the kernel's fsync path.)
//
// What syncfs costs beside that: it also writes out what other processes left dirty
// on the same file system, and waits for it. On a gateway whose file system holds
// little else that is a few pages; a large write by another process on it (a backup
// to the same disk) makes the replication batches of that moment wait for it, which
// shows as replication lag (`pmgcm status`), never as a lost or a refused message.
//
// A failed syncfs is kept by the store (syncFS, intake.go): the batch and every
// later one fail, their bodies are not marked held and are fetched again after the
// restart the error asks for.
//
// Crash points:
//   - before the commit: the index does not mark the body held; its final name may
//     have reached the disk, with or without its data: BeginBody re-hashes it and
//     adopts it (when whole) or replaces it; a .part is resumed.
//   - after the commit: the syncfs before it made the body and its name durable.
//
// A message deleted or purged before its body's batch: the batch records nothing and
// the body's names are removed.

// commitReceived marks the received body of id, under its final name (not synced), as
// held, in a batch that syncs the file system before it commits (group.go). A message
// deleted, purged or unknown meanwhile gets its body removed instead.
func (s *Store) commitReceived(id string) error {
	drop := false
	err := s.groupCommit(&commitReq{
		apply: func(tx *bolt.Tx) error {
			drop = false
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
			nw.HaveBody = true
			return putRecord(tx, old, &nw)
		},
		syncFS: true,
		linger: true, // a replica's copy: nobody waits on it but its fetcher
	})
	if err != nil {
		return fmt.Errorf("mailstore: commit body: %w", err)
	}
	if drop {
		s.removeBodies([]string{id})
	}
	return nil
}
