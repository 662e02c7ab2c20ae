package raftnode

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/hashicorp/raft"
)

// The master's log append in parallel with its replication.
//
// hashicorp/raft stores a batch of new entries on the leader (StoreLogs: a write and an
// fsync) and only then hands them to the replicators, so one write waits for two fsyncs
// in series: the master's, then a follower's. The Raft thesis (§10.2.1) and etcd let the
// leader write its own copy while the followers write theirs, provided the leader's copy
// counts toward the commit only once it is durable. raft v1.8.0 counts it as soon as
// StoreLogs returns and has no hook to say otherwise, so the rule is kept around it,
// by what anyone may act on:
//
//   - overlapStore: on the leader, StoreLogs hands the entries to a writer goroutine and
//     returns; they are readable at once (for the replicators) and durable once the
//     writer's StoreLogs of the write-ahead log returned. durable() is the highest index
//     the store has on disk. Off the leader (a follower's append, a truncation) every
//     call first waits for the writer to finish and is synchronous, as before.
//   - durableFSM: the state machine applies an entry (and raft answers its proposer)
//     only once durable() has reached it.
//   - capTransport: an AppendEntries request tells followers a commit index of at most
//     durable(): a follower applies an entry only once the master has it on disk.
//   - The first append of a leader's term (raft's noop) is synchronous. raft commits the
//     entries of earlier terms only through an entry of the leader's own term on a
//     quorum (Raft §5.4.2, Figure 8: an earlier term's entry on a quorum of disks can
//     still be overwritten), and admits a membership change only once that entry counts
//     as committed. With the noop on the master's disk before raft counts it, durable()
//     is at least the term's first index whenever raft commits in the term, so the
//     lower of raft's commit index and durable() is always an index of this term on a
//     quorum of disks: a properly committed one.
//
// So an entry is applied anywhere, or acknowledged, only once it is committed by Raft's
// rule on disks alone: on the master's and on those of the followers raft counted (a
// follower acknowledges an append only after its own fsync). If the master loses power
// before its fsync, the entry raft counted as committed was applied nowhere and answered
// to nobody; a new master may or may not have it, as for any write whose outcome is
// unknown.

// maxPendingBytes bounds the entries handed to the writer and not yet on disk; a leader
// StoreLogs past it waits for the writer (one fsync).
const maxPendingBytes = 32 << 20

// overlapStore is a raft.LogStore whose appends on the leader are written in the
// background (see above).
type overlapStore struct {
	store    raft.LogStore
	isLeader func() bool // set by setLeader once Raft runs; nil: every call is synchronous
	// onFail is called, on the writer goroutine, when a background append fails. The
	// master told raft the entries were stored: the only safe course is to stop the
	// process and let a restart recover from what is on disk (failStop).
	onFail func(error)
	// maxBytes bounds the unwritten entries (maxPendingBytes).
	maxBytes int

	mu       sync.Mutex
	changed  *sync.Cond  // signalled when the writer takes or finishes a batch, or on close
	pending  []*raft.Log // handed to the writer, in index order, not yet taken
	inflight []*raft.Log // being written by the writer, in index order
	bytes    int         // of pending and inflight
	writing  bool        // the writer goroutine runs
	failed   error       // sticky: a background append failed
	closed   bool        // Close was called
	// durable is the highest index on disk as far as the leader's appends go: set
	// exactly by every synchronous append (the first of each term among them), raised
	// by the writer. A truncation leaves it (see DeleteRange).
	durable uint64
	// lastTerm is the term of the last entry handed to the store: an append of another
	// term is the first of a new leader's term, and is synchronous.
	lastTerm uint64
	waitCh   chan struct{} // closed and replaced when durable moves or the store closes
}

var _ raft.MonotonicLogStore = (*overlapStore)(nil)

// errStoreClosed answers a call on a closed overlapStore.
var errStoreClosed = errors.New("raftnode: the log store is closed")

// newOverlapStore wraps store; the last index it has is durable.
func newOverlapStore(store raft.LogStore) (*overlapStore, error) {
	last, err := store.LastIndex()
	if err != nil {
		return nil, err
	}
	var term uint64
	if last > 0 {
		var l raft.Log
		if err := store.GetLog(last, &l); err != nil {
			return nil, fmt.Errorf("read the last log entry (%d): %w", last, err)
		}
		term = l.Term
	}
	o := &overlapStore{store: store, onFail: failStop, maxBytes: maxPendingBytes, durable: last, lastTerm: term,
		waitCh: make(chan struct{})}
	o.changed = sync.NewCond(&o.mu)
	return o, nil
}

// failStop ends the process after a failed background append of the master's log.
func failStop(err error) {
	panic(fmt.Sprintf("raftnode: the master could not write its Raft log, which raft already counts as stored (%v): "+
		"stopping, so that a restart recovers from what is on disk", err))
}

// setLeader makes StoreLogs write in the background while leader() is true. leader
// must be Raft's own state (raft.State() == raft.Leader): raft changes it on the same
// goroutine that calls StoreLogs, so it tells whose append a call is.
func (o *overlapStore) setLeader(leader func() bool) {
	o.mu.Lock()
	o.isLeader = leader
	o.mu.Unlock()
}

// durableIndex returns durable: on a leader, the highest index of its term on disk (a
// follower's truncation can leave it naming deleted entries until the next append,
// which is synchronous and sets it exactly).
func (o *overlapStore) durableIndex() uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.durable
}

// waitDurable waits until index is on disk; false if the store closed first.
func (o *overlapStore) waitDurable(index uint64) bool {
	return o.waitDurableCtx(context.Background(), index) == nil
}

// waitDurableCtx waits until index is on disk, within ctx.
func (o *overlapStore) waitDurableCtx(ctx context.Context, index uint64) error {
	o.mu.Lock()
	for o.durable < index {
		if o.closed {
			o.mu.Unlock()
			return ErrClosed
		}
		ch := o.waitCh
		o.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("%w: the master's log entry %d is not on its disk yet: %v", ErrTimeout, index, ctx.Err())
		}
		o.mu.Lock()
	}
	o.mu.Unlock()
	return nil
}

// setDurableLocked moves durable to index and wakes its waiters.
func (o *overlapStore) setDurableLocked(index uint64) {
	o.durable = index
	close(o.waitCh)
	o.waitCh = make(chan struct{})
}

// StoreLog stores one entry.
func (o *overlapStore) StoreLog(l *raft.Log) error { return o.StoreLogs([]*raft.Log{l}) }

// StoreLogs stores logs: on the leader in the background, otherwise at once.
func (o *overlapStore) StoreLogs(logs []*raft.Log) error {
	if len(logs) == 0 {
		return nil
	}
	o.mu.Lock()
	if o.isLeader == nil || logs[0].Term != o.lastTerm || !o.isLeader() {
		o.mu.Unlock()
		return o.storeNow(logs)
	}
	defer o.mu.Unlock()
	size := 0
	for _, l := range logs {
		size += logSize(l)
	}
	for o.bytes > 0 && o.bytes+size > o.maxBytes && o.failed == nil && !o.closed {
		o.changed.Wait()
	}
	switch {
	case o.failed != nil:
		return o.failed
	case o.closed:
		return errStoreClosed
	}
	o.pending = append(o.pending, logs...)
	o.bytes += size
	o.lastTerm = logs[len(logs)-1].Term
	if !o.writing {
		o.writing = true
		go o.write()
	}
	return nil
}

// storeNow waits for the writer to finish, then stores logs itself.
func (o *overlapStore) storeNow(logs []*raft.Log) error {
	if err := o.drain(); err != nil {
		return err
	}
	if err := o.store.StoreLogs(logs); err != nil {
		return err
	}
	o.mu.Lock()
	o.setDurableLocked(logs[len(logs)-1].Index)
	o.lastTerm = logs[len(logs)-1].Term
	o.mu.Unlock()
	return nil
}

// waitWriterLocked waits, o.mu held, until the writer has written everything handed to
// it or failed.
func (o *overlapStore) waitWriterLocked() {
	for o.writing && o.failed == nil {
		o.changed.Wait()
	}
}

// drain waits until the writer has written everything handed to it.
func (o *overlapStore) drain() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.waitWriterLocked()
	switch {
	case o.failed != nil:
		return o.failed
	case o.closed:
		return errStoreClosed
	}
	return nil
}

// write is the writer goroutine: it stores what is pending, all of it in one StoreLogs
// (one fsync), until nothing is.
func (o *overlapStore) write() {
	o.mu.Lock()
	for len(o.pending) > 0 {
		batch := o.pending
		o.inflight, o.pending = batch, nil
		o.mu.Unlock()
		err := o.store.StoreLogs(batch)
		o.mu.Lock()
		if err != nil {
			o.failed = fmt.Errorf("store the master's log entries %d-%d: %w", batch[0].Index, batch[len(batch)-1].Index, err)
			o.writing = false
			o.changed.Broadcast()
			fail := o.onFail
			o.mu.Unlock()
			fail(o.failed)
			return
		}
		o.inflight = nil
		for _, l := range batch {
			o.bytes -= logSize(l)
		}
		o.setDurableLocked(batch[len(batch)-1].Index)
		o.changed.Broadcast()
	}
	o.writing = false
	o.changed.Broadcast()
	o.mu.Unlock()
}

// GetLog returns the entry at index, from the entries not yet written or from the store.
func (o *overlapStore) GetLog(index uint64, l *raft.Log) error {
	o.mu.Lock()
	if e := o.unwrittenLocked(index); e != nil {
		*l = *e
		o.mu.Unlock()
		return nil
	}
	o.mu.Unlock()
	// Below the unwritten entries: on disk already (the writer stores them in order).
	return o.store.GetLog(index, l)
}

// unwrittenLocked returns the unwritten entry at index, or nil.
func (o *overlapStore) unwrittenLocked(index uint64) *raft.Log {
	for _, run := range [][]*raft.Log{o.inflight, o.pending} {
		if len(run) > 0 && index >= run[0].Index && index <= run[len(run)-1].Index {
			return run[index-run[0].Index]
		}
	}
	return nil
}

// FirstIndex returns the first index, counting the unwritten entries of an empty store.
func (o *overlapStore) FirstIndex() (uint64, error) {
	first, err := o.store.FirstIndex()
	if err != nil || first != 0 {
		return first, err
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if e := o.firstUnwrittenLocked(); e != nil {
		return e.Index, nil
	}
	// The writer may have stored them between the two reads.
	return o.store.FirstIndex()
}

func (o *overlapStore) firstUnwrittenLocked() *raft.Log {
	switch {
	case len(o.inflight) > 0:
		return o.inflight[0]
	case len(o.pending) > 0:
		return o.pending[0]
	}
	return nil
}

// LastIndex returns the last index, unwritten entries included.
func (o *overlapStore) LastIndex() (uint64, error) {
	o.mu.Lock()
	switch {
	case len(o.pending) > 0:
		defer o.mu.Unlock()
		return o.pending[len(o.pending)-1].Index, nil
	case len(o.inflight) > 0:
		defer o.mu.Unlock()
		return o.inflight[len(o.inflight)-1].Index, nil
	}
	o.mu.Unlock()
	return o.store.LastIndex()
}

// DeleteRange deletes the entries lo..hi. A deletion of the head (log compaction after
// a snapshot, below every unwritten entry) goes to the store at once; one that reaches
// the unwritten entries (a follower's truncation of a conflicting tail) first waits for
// the writer.
//
// durable is left as it is. It bounds only what a leader appended in the background:
// each term's first append is synchronous and sets it to its own index exactly, and the
// entries below that index are on disk; a truncation on a follower happens before any
// such append. A deletion of the tail (a truncation, or the whole log under an
// installed snapshot) forgets lastTerm, which makes the next append synchronous; a
// compaction of the head keeps it.
func (o *overlapStore) DeleteRange(lo, hi uint64) error {
	o.mu.Lock()
	first := o.firstUnwrittenLocked()
	o.mu.Unlock()
	if first == nil || hi >= first.Index {
		if err := o.drain(); err != nil {
			return err
		}
	}
	last, err := o.store.LastIndex()
	if err != nil {
		return err
	}
	if err := o.store.DeleteRange(lo, hi); err != nil {
		return err
	}
	if hi >= last {
		o.mu.Lock()
		o.lastTerm = 0
		o.mu.Unlock()
	}
	return nil
}

// IsMonotonic implements raft.MonotonicLogStore: the store's answer.
func (o *overlapStore) IsMonotonic() bool {
	if s, ok := o.store.(raft.MonotonicLogStore); ok {
		return s.IsMonotonic()
	}
	return false
}

// Close waits for the writer (bounded by one fsync), then refuses further calls and
// releases the waiters of durable indexes. It does not close the store under it.
func (o *overlapStore) Close() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.waitWriterLocked()
	if !o.closed {
		o.closed = true
		close(o.waitCh)
		o.waitCh = make(chan struct{})
		o.changed.Broadcast()
	}
	return o.failed
}
