package mailstore

import (
	"os"
)

// The page cache of durable bodies.
//
// A body is written once and read rarely: a replica's copy is read again only to serve
// a peer that lacks it, a backup or a check; the receiving node's copy is read by its
// peers' fetches within a second or so, then rarely. Left in the page cache, the bodies
// of a busy gateway push out what is read all the time (the index, the binaries), and
// every new body takes pages the kernel has to find: on a virtual machine whose host
// reclaims the guest's free memory, a page the guest has not touched for a while costs
// several times the copy into it (docs/performance.md, "Mail bodies out of the page
// cache"). So once a body is durable the store tells the kernel it will not need its
// pages (posix_fadvise POSIX_FADV_DONTNEED), and the pages go back to the free lists,
// from where the next bodies take them while they are still warm:
//   - a body received from a peer, after the batch that synced the file system and
//     marked it held (BodyWriter.Commit);
//   - an accepted body, after the checkpoint that synced the file system and removed the
//     journal segment its record was in (checkpoint, intake.go): by then its peers have
//     usually fetched it.
//
// It is advice only. The kernel drops only clean pages, and a later read of the body
// reads it from the disk. Nothing depends on it for correctness, so its errors are
// ignored; on systems without posix_fadvise it does nothing (pagecache_other.go).

// dropCachedBodies drops the cached pages of the bodies of ids, one by one; a body that
// is gone (deleted or purged meanwhile) is skipped.
func (s *Store) dropCachedBodies(ids []string) {
	for _, id := range ids {
		f, err := os.Open(s.BodyPath(id))
		if err != nil {
			continue
		}
		dropCached(f)
		_ = f.Close()
	}
}
