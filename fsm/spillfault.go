package fsm

import (
	"sync"
	"time"
)

// A value the disk will not give back (issue 16's spill files): every read of it fails
// with ErrValueUnreadable, and so does every snapshot, since a snapshot is never written
// without a value. Raft then keeps its whole log, which grows until the disk is full,
// and the node's answers for that key are errors. The files are a cache: a restart of
// the daemon rebuilds them from the Raft log and snapshot. So the FSM keeps the first
// failed read and a count, for the daemon to report (status, the cluster health check,
// a metric) until a snapshot has read every value again, or the files it failed in are
// gone.

// SpillFault is the record of reads of spilled values that failed.
type SpillFault struct {
	// Err is the first failed read since the last snapshot that read every value.
	Err error
	// Since is when it failed; Reads counts the failed reads since then.
	Since time.Time
	Reads uint64
}

// readFaults keeps the SpillFault of one FSM and the count of all failed reads; its
// methods are safe for concurrent use (reads run outside the FSM's lock).
//
// A fault ends when nothing can meet it again: when a snapshot taken after the last
// failed read was written (it read every value of its state), or when every segment a
// read failed in is gone (its last holder let go: after a Restore, a Reset or a
// compaction, which reads every live value, moved the state off it).
type readFaults struct {
	mu    sync.Mutex
	cur   *SpillFault
	total uint64
	// bad counts the failed reads of each segment still open, since the fault began.
	bad map[*segment]uint64
	// onFault, if not nil, is told of the first failed read of a fault, and onClear of
	// its end (neither under mu).
	onFault func(error)
	onClear func()
}

// failed records a failed read of seg.
func (r *readFaults) failed(err error, seg *segment) {
	if r == nil {
		return
	}
	r.mu.Lock()
	r.total++
	first := r.cur == nil
	if first {
		r.cur = &SpillFault{Err: err, Since: time.Now()}
		r.bad = map[*segment]uint64{}
	}
	r.cur.Reads++
	r.bad[seg]++
	notify := r.onFault
	r.mu.Unlock()
	if first && notify != nil {
		notify(err)
	}
}

// mark returns the count of failed reads so far, for snapshotRead.
func (r *readFaults) mark() uint64 {
	if r == nil {
		return 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.total
}

// snapshotRead records that a snapshot taken when mark returned since read every value:
// it ends the fault unless a read failed after that.
func (r *readFaults) snapshotRead(since uint64) {
	if r == nil {
		return
	}
	r.mu.Lock()
	end := r.cur != nil && r.total == since
	r.endLocked(end)
}

// released records that seg's file is gone: its failed reads can happen no more.
func (r *readFaults) released(seg *segment) {
	if r == nil {
		return
	}
	r.mu.Lock()
	_, had := r.bad[seg]
	delete(r.bad, seg)
	r.endLocked(had && len(r.bad) == 0)
}

// endLocked ends the fault if end is set, unlocks r.mu, and tells onClear.
func (r *readFaults) endLocked(end bool) {
	if end {
		r.cur, r.bad = nil, nil
	}
	notify := r.onClear
	r.mu.Unlock()
	if end && notify != nil {
		notify()
	}
}

// readFaults returns the spiller's record of failed reads, nil without SpillTo (f.sp is
// set once, before Raft starts, so any goroutine may read it).
func (f *FSM) readFaults() *readFaults {
	if f.sp == nil {
		return nil
	}
	return f.sp.faults
}

// SpillFault returns the current fault of the spilled values (false: none since the last
// snapshot that read every value) and the failed reads of this run in all.
func (f *FSM) SpillFault() (SpillFault, bool, uint64) {
	r := f.readFaults()
	if r == nil {
		return SpillFault{}, false, 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cur == nil {
		return SpillFault{}, false, r.total
	}
	return *r.cur, true, r.total
}

// OnSpillFault sets fault to be told, once per fault, of the first read of a spilled
// value that failed, and clear of the snapshot that ended it (call it after SpillTo,
// before Raft starts; neither may block).
func (f *FSM) OnSpillFault(fault func(error), clear func()) {
	r := f.readFaults()
	if r == nil {
		return
	}
	r.mu.Lock()
	r.onFault, r.onClear = fault, clear
	r.mu.Unlock()
}
