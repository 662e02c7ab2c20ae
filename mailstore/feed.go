package mailstore

import (
	"os"

	bolt "go.etcd.io/bbolt"
)

// The replication feed: the reads that serve a peer (mailrepl's handler) and the
// cursors a Replicator asks with. Unlike the other reads (view), they do not wait
// for the intake journal's acknowledged messages to be indexed:
//   - a peer needs no read-your-writes: a message indexed after the read shows in
//     the peer's next request, and Changed fires once it is;
//   - the peers' requests come with every change under load, and a read that waits
//     makes the index commit early (waitIndexedLocked hurries it), which undid the
//     linger of background batches (group.go).
//
// BeginBody reads the same way.

// Feed returns up to limit events above c, the floors to skip to (EventsFrom) and the
// heads, from one read of what the index has committed.
func (s *Store) Feed(c Cursors, limit int) (evs []Event, skip, heads Cursors, err error) {
	err = s.viewCommitted(func(tx *bolt.Tx) error {
		evs, skip, err = eventsFromTx(tx, c, limit)
		heads = headsTx(tx)
		return err
	})
	return evs, skip, heads, err
}

// FeedHeads returns the heads the index has committed: the cursors a Replicator asks
// its peers with.
func (s *Store) FeedHeads() Cursors {
	return s.heads(s.viewCommitted)
}

// FeedBody is OpenBody for a peer: the body of a message the index has committed.
func (s *Store) FeedBody(id string) (*os.File, Meta, error) {
	return s.openBody(s.viewCommitted, id)
}
