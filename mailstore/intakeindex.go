package mailstore

import (
	"fmt"
	"time"
)

// Indexing the journal's records, and trying again when an index commit fails.
//
// A record's index commit can fail for a reason of the whole batch it shared (a
// directory fsync another member named, bbolt's commit on a full disk): the
// record is in the journal, so the index is tried again, every record from the
// first unindexed one on, in order, after a backoff (indexRetryBase, doubling).
// Meanwhile intake goes on; reads and writes of the index wait, as for any
// record not indexed yet. After maxIndexRetries failures in a row the journal
// stops (breakJournal): Accepts are refused, reads go on without the records it
// holds, and a restart indexes them from the journal.

const maxIndexRetries = 5

// indexRetryBase is the first retry's backoff (a variable for tests).
var indexRetryBase = 100 * time.Millisecond

// indexItem is an acknowledged record waiting for its index commit.
type indexItem struct {
	r *intakeReq
	n uint64 // its journal counter
}

// indexed records the outcome of the index commit of journal record n. A copy
// queued again by a retry whose record is indexed by then is ignored, and so are
// failures while the journal is stopped.
func (s *Store) indexed(n uint64, err error) {
	j := &s.jr
	j.mu.Lock()
	defer j.mu.Unlock()
	if n <= j.indexed || j.broken != nil {
		return
	}
	if err == nil {
		// The sequence check in indexTx makes records commit in order.
		j.indexed = n
		k := 0
		for k < len(j.unindexed) && j.unindexed[k].n <= n {
			j.unindexed[k].r.releaseMemLocked() // indexed: no index commit of it runs again
			k++
		}
		j.unindexed = j.unindexed[k:]
		j.retries = 0
		j.cond.Broadcast()
		return
	}
	// Whichever record failed (the first unindexed one, or one behind it whose
	// own step failed while the one before committed), every record from the
	// first unindexed one on goes again; one retry is due at a time.
	if j.retryTimer != nil {
		return
	}
	if j.retries >= maxIndexRetries {
		_ = j.breakLocked(fmt.Errorf("indexing accepted message %d failed %d times: %w", n, j.retries+1, err))
		return
	}
	j.retries++
	j.retryTimer = time.AfterFunc(indexRetryBase<<(j.retries-1), s.retryIndex)
}

// retryIndex queues the index commits of every record not indexed yet again, in
// order (with those still waiting for indexDelay).
func (s *Store) retryIndex() {
	j := &s.jr
	j.mu.Lock()
	defer j.mu.Unlock()
	j.retryTimer = nil
	if j.broken != nil {
		return
	}
	j.flushed = j.indexed
	s.flushToIndexLocked()
	// A reader may wait for these records since before the failure: its hurry
	// (waitIndexedLocked) may have gone to a batch in between, so the retry must not
	// linger (group.go).
	s.gc.hurry()
}
