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
// a metric) until a snapshot has read every value again.

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
type readFaults struct {
	mu    sync.Mutex
	cur   *SpillFault
	total uint64
	// onFault, if not nil, is told of the first failed read of a fault, and onClear of
	// its end (neither under mu).
	onFault func(error)
	onClear func()
}

// failed records a failed read.
func (r *readFaults) failed(err error) {
	if r == nil {
		return
	}
	r.mu.Lock()
	r.total++
	first := r.cur == nil
	if first {
		r.cur = &SpillFault{Err: err, Since: time.Now()}
	}
	r.cur.Reads++
	notify := r.onFault
	r.mu.Unlock()
	if first && notify != nil {
		notify(err)
	}
}

// cleared records that a snapshot read every value, which ends a fault.
func (r *readFaults) cleared() {
	if r == nil {
		return
	}
	r.mu.Lock()
	was := r.cur != nil
	r.cur = nil
	notify := r.onClear
	r.mu.Unlock()
	if was && notify != nil {
		notify()
	}
}

// SpillFault returns the current fault of the spilled values (false: none since the last
// snapshot that read every value) and the failed reads of this run in all.
func (f *FSM) SpillFault() (SpillFault, bool, uint64) {
	r := f.faults
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
	if f.faults == nil {
		return
	}
	f.faults.mu.Lock()
	f.faults.onFault, f.faults.onClear = fault, clear
	f.faults.mu.Unlock()
}
