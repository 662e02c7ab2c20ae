package fsm

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
)

// Values out of the heap (issue 16: resident memory at most twice the data).
//
// With SpillTo, a configuration value of spillMin bytes or more is written to a segment
// file in the spill directory and the state keeps only its place (offset, length); a
// read copies it back with pread, outside the FSM's lock. The values then sit in the
// kernel's page cache, which the kernel can reclaim, instead of in the Go heap, which it
// cannot: a node's resident memory follows the number of keys, not the size of the data.
//
// The segment files are a cache of the state, not part of it: the state is the Raft log
// and its snapshots, which hold every value. They are never synced; SpillTo empties the
// directory, and Raft rebuilds the state (and the files) from its snapshot and log at
// each start. A release that does not spill ignores the directory. So no disk format
// changes (DESIGN.md rule 7).
//
// Every spilled slot of a state lies in that state's segment (state.seg). Only the
// goroutine that applies (Raft's FSM goroutine: Apply, Restore) appends to it, past every
// offset a slot refers to, so readers and a concurrent Persist read stable bytes. When
// the dead values (overwritten or deleted) outweigh the live ones, compactSpill copies
// the live values into a new segment and the state moves to it; a snapshot or a reader
// still holding the old segment keeps it open (a reference count), and the last one out
// closes and removes its file.
//
// A value that cannot be written (disk full, I/O error) stays in the heap, as without
// SpillTo: the state is the same, only its memory differs. The error is reported once,
// until a write succeeds again.

// spillMin is the smallest value spilled: below it the slot's place costs about as much
// heap as the value, and small settings (the intake's) stay a memory read away.
const spillMin = 64

// compactMinDead is the least dead bytes worth a compaction; tests lower it.
var compactMinDead int64 = 32 << 20

// segment is one spill file. Its references are the states that hold it (the live state
// and its clones: snapshots, hash requests) and the readers between a lookup and their
// pread; the last unpin closes and removes the file.
type segment struct {
	f    *os.File
	path string
	refs atomic.Int64
	// end is where the next value goes; only the applying goroutine moves it (atomic
	// for SpillStats).
	end atomic.Int64
	// faults records the reads that fail (spillfault.go).
	faults *readFaults
}

// pin takes a reference for a holder of s (nil-safe). It is called with the FSM's lock
// held, on a segment the live state or a pinned clone holds, so never on a closed one.
func (s *segment) pin() *segment {
	if s != nil {
		s.refs.Add(1)
	}
	return s
}

// unpin drops a reference (nil-safe); the last one closes and removes the file.
func (s *segment) unpin() {
	if s == nil || s.refs.Add(-1) != 0 {
		return
	}
	_ = s.f.Close()
	_ = os.Remove(s.path)
	s.faults.released(s)
}

// read copies n bytes at off into buf's start (grown if short) and returns them.
func (s *segment) read(buf []byte, off int64, n uint32) ([]byte, error) {
	if uint32(cap(buf)) < n {
		buf = make([]byte, n)
	}
	b := buf[:n]
	if _, err := s.f.ReadAt(b, off); err != nil {
		err = fmt.Errorf("%w: read %s at %d: %w", ErrValueUnreadable, s.path, off, err)
		s.faults.failed(err, s)
		return nil, err
	}
	return b, nil
}

// append writes v at the end and returns its offset.
func (s *segment) append(v []byte) (int64, error) {
	off := s.end.Load()
	if _, err := s.f.WriteAt(v, off); err != nil {
		return 0, err
	}
	s.end.Store(off + int64(len(v)))
	return off, nil
}

// spiller makes the segments of one FSM and keeps the live state's accounts. Only the
// applying goroutine uses it.
type spiller struct {
	dir   string
	min   int // spillMin; tests lower it
	seq   int
	onErr func(error)
	// failing is set at a failed write and cleared at the next good one, so that a full
	// disk is reported once, not per value.
	failing bool
	// retryAt is the dead bytes at which a compaction of retrySeg that failed is tried
	// again; a state on another segment (after a Restore or Reset) starts afresh.
	retryAt  int64
	retrySeg *segment
	// faults is given to every segment (spillfault.go).
	faults *readFaults
}

// SpillTo makes f keep its configuration values of spillMin bytes or more in segment
// files under dir (created if missing, emptied if not) instead of the heap. onErr, if
// not nil, is told when a value cannot be written there (it is then kept in the heap).
// Call it before Raft starts, on an FSM with no entries.
func (f *FSM) SpillTo(dir string, onErr func(error)) error {
	f.mu.RLock()
	n := len(f.st.entries)
	f.mu.RUnlock()
	if n > 0 || f.sp != nil {
		return errors.New("fsm: SpillTo on an FSM that already holds entries")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("spill directory: %w", err)
	}
	old, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("spill directory: %w", err)
	}
	for _, e := range old {
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
			return fmt.Errorf("spill directory: empty it: %w", err)
		}
	}
	f.sp = &spiller{dir: dir, min: spillMin, onErr: onErr, faults: &readFaults{}}
	return nil
}

// SpillStats is where the configuration values are (see SpillTo).
type SpillStats struct {
	// OnDisk and InMemory are the bytes of the values in the spill file and in the heap.
	OnDisk, InMemory int64
	// FileBytes is the size of the live spill file: OnDisk plus the values overwritten
	// or deleted since its last compaction.
	FileBytes int64
}

// SpillStats returns where the values are now.
func (f *FSM) SpillStats() SpillStats {
	f.mu.RLock()
	defer f.mu.RUnlock()
	st := SpillStats{OnDisk: f.st.spilled, InMemory: f.st.inHeap}
	if f.st.seg != nil {
		st.FileBytes = f.st.seg.end.Load()
	}
	return st
}

// Close releases the live state's segment: its file is removed once no snapshot or
// reader holds it. The FSM must not be used after Close.
func (f *FSM) Close() {
	f.mu.Lock()
	seg := f.st.seg
	f.st.seg = nil
	f.mu.Unlock()
	seg.unpin()
}

// newSegment creates an empty segment file, holding one reference for its first state.
func (sp *spiller) newSegment() (*segment, error) {
	sp.seq++
	path := filepath.Join(sp.dir, strconv.Itoa(sp.seq)+".seg")
	file, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	s := &segment{f: file, path: path, faults: sp.faults}
	s.refs.Store(1)
	return s, nil
}

// failed reports err once per run of failures.
func (sp *spiller) failed(err error) {
	if !sp.failing && sp.onErr != nil {
		sp.onErr(fmt.Errorf("configuration values stay in memory: %w", err))
	}
	sp.failing = true
}

// put returns the slot for value v of a state whose segment is *seg, writing v there
// when it is worth spilling; it makes the segment when there is none yet (the caller
// stores *seg in the state). On any failure the value stays in the heap.
func (sp *spiller) put(seg **segment, v []byte, version uint64) slot {
	if sp == nil || len(v) < sp.min || len(v) > MaxValueLen {
		return heapSlot(version, v) // over MaxValueLen: a command Apply refuses anyway
	}
	if *seg == nil {
		s, err := sp.newSegment()
		if err != nil {
			sp.failed(err)
			return heapSlot(version, v)
		}
		*seg = s
	}
	if (*seg).end.Load()+int64(len(v)) > maxSpillOffset {
		sp.failed(fmt.Errorf("%s is full", (*seg).path)) // not before 8 TiB
		return heapSlot(version, v)
	}
	off, err := (*seg).append(v)
	if err != nil {
		sp.failed(fmt.Errorf("write %s: %w", (*seg).path, err))
		return heapSlot(version, v)
	}
	sp.failing = false
	return diskSlot(version, off, len(v))
}

// place returns the slots of the values cmd carries, in their order (one for a
// ConfigSet, one per entry for a RestoreConfig, none for the others), written to the
// live state's segment when sp spills. Apply calls it before it takes the lock, so that
// no file is written under it; a refused command leaves its values as dead bytes. A
// halted FSM refuses every entry and never compacts, so nothing is written then: else
// the files would grow with the log for as long as the node waits for an upgrade.
// (f.halted is read without the lock: only the applying goroutine, this one, sets it.)
func (f *FSM) place(cmd Command, idx uint64) []slot {
	if f.sp == nil || f.halted != nil {
		return nil
	}
	switch c := cmd.(type) {
	case ConfigSet:
		return []slot{f.sp.put(&f.pending, c.Value, idx)}
	case RestoreConfig:
		out := make([]slot, len(c.Entries))
		for i, e := range c.Entries {
			out[i] = f.sp.put(&f.pending, e.Value, idx)
		}
		return out
	}
	return nil
}

// compactSpill moves the live values into a new segment when the dead bytes of the
// current one are at least compactMinDead and at least the live bytes: the files then
// hold at most about twice the live values, and a value is copied on average at most
// once per time it was written. It runs on the applying goroutine after Apply has let go
// of the lock: the copy reads the entries without it (only this goroutine changes
// them), and the lock is taken only to move the slots.
func (f *FSM) compactSpill() {
	seg := f.st.seg
	if f.sp == nil || seg == nil {
		return
	}
	dead := seg.end.Load() - f.st.spilled
	if dead < compactMinDead || dead < f.st.spilled || (seg == f.sp.retrySeg && dead < f.sp.retryAt) {
		return
	}
	if err := f.moveSpilled(seg); err != nil {
		f.sp.failed(fmt.Errorf("compact the spilled values: %w", err))
		f.sp.retryAt, f.sp.retrySeg = dead+compactMinDead, seg
		return
	}
	f.sp.retryAt, f.sp.retrySeg = 0, nil
}

// moved is a slot's new offset.
type moved struct {
	key string
	off int64
}

func (f *FSM) moveSpilled(seg *segment) error {
	next, err := f.sp.newSegment()
	if err != nil {
		return err
	}
	moves := make([]moved, 0, len(f.st.entries))
	var buf []byte
	for k, sl := range f.st.entries {
		if !sl.spilled() {
			continue
		}
		v, err := seg.read(buf, sl.off(), sl.n())
		if err == nil {
			buf = v
			var off int64
			if off, err = next.append(v); err == nil {
				moves = append(moves, moved{key: k, off: off})
				continue
			}
		}
		next.unpin()
		return err
	}
	f.mu.Lock()
	for _, m := range moves {
		sl := f.st.entries[m.key]
		f.st.entries[m.key] = diskSlot(sl.version, m.off, int(sl.n()))
	}
	f.st.seg = next
	f.pending = next
	f.mu.Unlock()
	seg.unpin()
	return nil
}
