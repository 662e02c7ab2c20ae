package mailstore

import (
	"errors"
	"fmt"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/pmgcm/pmgcm/internal/dirsync"
)

// Group commit. Concurrent Accepts (one per SMTP connection) and body commits (one
// per replication transfer) share their index transaction and directory syncs: a
// caller queues a commitReq and waits; one goroutine at a time (the committer)
// takes every queued request and makes them durable together:
//
//  1. in one bbolt read-write transaction, apply runs for every member, in queue
//     order (an Accept takes its sequence number here, so IDs and events stay
//     contiguous per origin, as with one transaction each);
//  2. place runs for every member (an accepted body is written to the final path of
//     the ID it got from its record in memory, not synced (intake.go), or a spooled
//     one hard-linked there, spool.go), still inside the transaction;
//  3. every distinct directory the members named is fsynced, once per batch (all at
//     once, so that the file system can serve them with one journal commit), and
//     each member's own fsync (an Accept's body, started before it queued) is
//     awaited;
//  4. the transaction commits (bbolt fdatasyncs its pages, then its meta page);
//  5. the store's Changed channel is closed once (unless no member changed
//     anything), then each caller is woken.
//
// An Accept starts the fsync of its body file before it queues (concurrent fsyncs
// of different files proceed in parallel; on a journaling file system they share
// a journal commit), so that it overlaps the commit of the batch before, or this
// batch's directory syncs for a lone caller. A body received from a peer is
// given its final name by its writer, not synced (BodyWriter.Commit, recv.go): its
// batch syncs the whole file system once (syncfs) in place of step 3's directories.
//
// A caller is woken only after step 4 returned (or with an error): nobody answers
// 250 for a message whose index entry is not durable. An error of one member
// (its apply, place or ready failed) rolls the transaction back, puts back the files the
// others placed, and runs the batch again without that member, which gets its own
// error; the others are not failed for it. An error of the whole batch (a directory
// sync, the commit) fails every member, after removing the files they placed.
//
// There is no fixed delay for a caller who answers a client: a lone caller becomes
// the committer at once. While a batch commits, new requests queue and form the next
// batch. The caller that found the committer idle runs the first batch (its own
// request is in it) and hands any later ones to a new goroutine, so that it can
// answer its client at once.
//
// Background work lingers (issue 16). A request with linger set is one no client
// waits on: the index entry of a message the intake journal already made durable
// (intake.go), a body received from a peer (recv.go), a peer's events (events.go).
// Under load (the two batches before started less than 2*commitLinger apart), a
// batch of such requests alone starts no sooner than commitLinger after the start
// of the batch before. So the background batches (bbolt's two fdatasyncs, a
// received body's syncfs) come at most about 25 times a second unless lingerMax
// requests queue, and each carries more. Each commit is mostly fixed cost: on the
// 2-core machine three nodes took about a quarter more mail with it
// (docs/performance.md). The linger ends at once when a request without linger
// queues, when lingerMax requests wait (a joining node's fetchers must not all
// stand still: mailrepl runs 32), or when a reader of the index waits for it
// (hurry: the journal's waitIndexedLocked, a retried index commit, Close). A store
// without load commits a lone request at once, so a quiet node pays nothing: a
// replica's body commit, which comes a few milliseconds after the batch of the
// events that brought it, does not wait out a linger. Nothing is made durable later
// than promised: a lingering request's caller either has its data durable already
// (the journal) or promised nothing to anyone yet (a replica's copy).

// commitReq is one caller's share of a batch.
type commitReq struct {
	// apply makes the member's index changes in the batch transaction. It may run
	// again in a new transaction (after another member failed): it must start from
	// scratch each time and touch nothing outside tx.
	apply func(tx *bolt.Tx) error
	// place, when set, moves the member's files into place after every apply
	// succeeded and returns the directory to sync (an Accept's link; tmp/). unplace
	// undoes it for a rerun of the batch; drop removes what place put when the
	// batch failed as a whole.
	place   func() (dir string, err error)
	unplace func() error
	drop    func()
	// ready, when set, waits for the member's own durability work (an Accept's
	// fsync of its body, started before it queued) and returns its error; it is
	// called after the directory syncs, before the commit, and may be called again
	// at a rerun (it must return the same answer).
	ready func() error
	// after, when set, runs once the batch committed, before the caller is woken
	// (an Accept hands its spooled name to the background flush, spool.go).
	after func()
	// syncFS says the member's data is not synced yet (a received body, recv.go):
	// the batch syncs the whole file system once (syncfs) instead of its directories.
	syncFS bool
	// linger says no client waits on the member (background work): its batch may
	// wait for others (commitLinger).
	linger bool
	// quiet, set by apply, says the member changed nothing a Changed waiter could
	// see (events already applied): alone in a batch, it does not notify.
	quiet bool
	// onDone, when set, is called with the member's outcome when it is woken (an
	// indexed journal record, intake.go, whose caller does not wait).
	onDone func(err error)

	placed bool
	err    error
	done   chan struct{}
}

// commitLinger is how long after the start of a batch one made only of lingering
// requests may start (committer.linger, which tests change).
const commitLinger = 40 * time.Millisecond

// lingerMax is how many queued requests end a linger: half of a Replicator's
// fetchers (mailrepl.DefaultFetchers), so that the others go on fetching while
// these commit. Every request counts, an index request (one per journaled message)
// too: 16 messages within a linger also end it, which bounds what one batch holds.
const lingerMax = 16

// committer is the queue of requests waiting for a batch.
type committer struct {
	mu      sync.Mutex
	queue   []*commitReq
	running bool // a goroutine is committing or about to
	// last is when the latest batch started, prev when the one before did (two
	// batches less than 2*linger apart: the store is under load, and background
	// batches linger); hurried says a reader waits for the queued requests (no
	// linger until the next batch starts). wake (1-buffered) ends a linger early, to
	// look at the queue again.
	last, prev time.Time
	hurried    bool
	wake       chan struct{} // made by Open, as linger
	linger     time.Duration // commitLinger
	// hook, when set (by tests, with mu held), is called with the size of each batch
	// before it commits, with no lock held.
	hook func(n int)
}

// errMember stops a batch transaction because one member failed (its error is in
// its commitReq); the batch runs again without it.
var errMember = errors.New("mailstore: batch member failed")

// groupCommit queues r, waits until it is durable (or failed) and returns its error.
func (s *Store) groupCommit(r *commitReq) error {
	c := &s.gc
	if c.enqueue(r) {
		s.commitNext() // r is in this batch
		c.mu.Lock()
		if len(c.queue) == 0 {
			c.running = false
			c.mu.Unlock()
		} else {
			c.mu.Unlock()
			go s.commitLoop()
		}
	}
	<-r.done
	return r.err
}

// groupEnqueue queues r without waiting for it (its onDone says the outcome): the
// intake journal's index requests, which must keep their queue order.
func (s *Store) groupEnqueue(r *commitReq) {
	if s.gc.enqueue(r) {
		go s.commitLoop()
	}
}

// enqueue queues r; lead says the committer was idle and the caller must start it.
func (c *committer) enqueue(r *commitReq) (lead bool) {
	r.done = make(chan struct{})
	c.mu.Lock()
	defer c.mu.Unlock()
	c.queue = append(c.queue, r)
	lead = !c.running
	c.running = true
	if !r.linger || len(c.queue) >= lingerMax {
		c.signal()
	}
	return lead
}

// hurry ends a linger: a reader waits for the queued requests.
func (c *committer) hurry() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.hurried = true
	c.signal()
}

// signal wakes a lingering committer; c.mu is held.
func (c *committer) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// lingerLocked returns how long the queued requests may still wait for others
// (zero or less: commit them now); c.mu is held.
func (c *committer) lingerLocked(now time.Time) time.Duration {
	if c.hurried || len(c.queue) >= lingerMax {
		return 0
	}
	for _, r := range c.queue {
		if !r.linger {
			return 0
		}
	}
	if c.last.Sub(c.prev) >= 2*c.linger {
		// No load: a lone request (a quiet node's received body, right after the
		// batch of the events that brought it) commits at once.
		return 0
	}
	return c.last.Add(c.linger).Sub(now)
}

// takeLocked waits, with c.mu held (released while it waits), until the queue may
// be committed, and returns it, emptied; nil when it is empty (the committer is
// then marked idle).
func (c *committer) takeLocked() []*commitReq {
	for len(c.queue) > 0 {
		now := time.Now()
		d := c.lingerLocked(now)
		if d <= 0 {
			batch := c.queue
			c.queue, c.prev, c.last, c.hurried = nil, c.last, now, false
			return batch
		}
		c.mu.Unlock()
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-c.wake: // made once by Open, never replaced
		}
		t.Stop()
		c.mu.Lock()
	}
	c.running = false
	return nil
}

// commitLoop commits batches until the queue is empty.
func (s *Store) commitLoop() {
	for s.commitNext() {
	}
}

// commitNext commits the queued requests as one batch; false when there were none
// (the committer is then marked idle).
func (s *Store) commitNext() bool {
	c := &s.gc
	c.mu.Lock()
	batch := c.takeLocked()
	hook := c.hook
	c.mu.Unlock()
	if len(batch) == 0 {
		return false
	}
	if hook != nil {
		hook(len(batch))
	}
	s.commitBatch(batch)
	return true
}

// commitBatch makes batch durable in one transaction (see the comment at the top).
// It wakes every member.
func (s *Store) commitBatch(batch []*commitReq) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		for _, r := range batch {
			r.finish(ErrClosed)
		}
		return
	}
	live := batch
	for len(live) > 0 {
		err := s.db.Update(func(tx *bolt.Tx) error {
			for _, r := range live {
				if err := r.apply(tx); err != nil {
					r.err = err
					return errMember
				}
			}
			dirs := map[string]struct{}{}
			for i, r := range live {
				if r.place == nil {
					continue
				}
				d, err := r.place()
				if err != nil {
					r.err = err
					unplaceAll(live[:i])
					return errMember
				}
				r.placed = true
				if d != "" {
					dirs[d] = struct{}{}
				}
			}
			if err := s.syncBatch(live, dirs); err != nil {
				return err
			}
			failed := false
			for _, r := range live {
				if r.ready == nil {
					continue
				}
				if err := r.ready(); err != nil {
					r.err, failed = err, true
				}
			}
			if failed {
				unplaceAll(live)
				return errMember
			}
			return nil
		})
		if errors.Is(err, errMember) {
			// Wake the failed members (their err is set); the others go again.
			rest := make([]*commitReq, 0, len(live))
			for _, r := range live {
				if r.err != nil {
					r.finish(r.err)
				} else {
					rest = append(rest, r)
				}
			}
			live = rest
			continue
		}
		if err != nil {
			for _, r := range live {
				if r.placed && r.drop != nil {
					r.drop()
				}
				r.finish(err)
			}
			return
		}
		for _, r := range live {
			if !r.quiet {
				s.notify()
				break
			}
		}
		for _, r := range live {
			if r.after != nil {
				r.after()
			}
			r.finish(nil)
		}
		return
	}
}

// unplaceAll undoes the placement of members before a rerun of their batch. A
// member whose files cannot be put back is failed (its err set).
func unplaceAll(rs []*commitReq) {
	for i := len(rs) - 1; i >= 0; i-- {
		r := rs[i]
		if !r.placed {
			continue
		}
		r.placed = false
		if err := r.unplace(); err != nil {
			if r.drop != nil {
				r.drop()
			}
			r.err = fmt.Errorf("put back after a failed batch member: %w", err)
		}
	}
}

// maxDirSyncs bounds the directory fsyncs of a batch in flight at once (each holds a
// file descriptor).
const maxDirSyncs = 16

// syncDirs fsyncs every directory of dirs. With several, the fsyncs run at once:
// on a journaling file system (ext4, XFS) they then share one journal commit, where
// one after the other each would wait for the disk again.
func syncDirs(dirs map[string]struct{}) error {
	if len(dirs) <= 1 {
		for d := range dirs {
			return dirsync.Sync(d)
		}
		return nil
	}
	errs := make(chan error, len(dirs))
	slots := make(chan struct{}, maxDirSyncs)
	for d := range dirs {
		slots <- struct{}{}
		go func() {
			errs <- dirsync.Sync(d)
			<-slots
		}()
	}
	var first error
	for range dirs {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// syncBatch makes the members' files durable before their commit: one syncfs when one
// of them needs it (it covers every directory too), else the directories they named.
func (s *Store) syncBatch(live []*commitReq, dirs map[string]struct{}) error {
	for _, r := range live {
		if r.syncFS {
			return s.syncFS()
		}
	}
	return syncDirs(dirs)
}

// finish wakes the member's caller with err.
func (r *commitReq) finish(err error) {
	r.err = err
	close(r.done)
	if r.onDone != nil {
		r.onDone(err)
	}
}
