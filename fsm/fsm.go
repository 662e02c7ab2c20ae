package fsm

import (
	"bytes"
	"cmp"
	"errors"
	"slices"
	"strings"
	"sync"

	"github.com/hashicorp/raft"
)

// FSM is the replicated state machine. It implements raft.FSM. Apply,
// Snapshot and Restore are called by Raft (Apply and Snapshot from one
// goroutine, Restore never concurrently with them); the read methods may be
// called from any goroutine at any time.
type FSM struct {
	mu      sync.RWMutex
	st      state
	applied uint64
	onApply func(index uint64)
	// hashReqs wait for the state at an index (HashAt, hash.go).
	hashReqs []*hashRequest
	// halted is set at the first entry this build cannot apply (see ErrHalted).
	halted error
	onHalt func(err error)
	// sp spills values out of the heap (SpillTo; nil: they stay in it). pending is the
	// segment it writes to, the live state's (st.seg) but for the moment between
	// making one and storing it under the lock; only the applying goroutine uses both,
	// but for sp's record of failed reads (readFaults), which has its own lock: sp is set
	// once, by SpillTo, before Raft starts.
	sp      *spiller
	pending *segment
}

var _ raft.FSM = (*FSM)(nil)

// state is the replicated state. Byte slices inside it are never modified in
// place, only replaced, so snapshots and readers may share them.
type state struct {
	cluster *Cluster
	members map[uint64]Member
	entries map[string]slot
	// tombs are the deletions remembered for watchers (see Changes).
	tombs tombstones
	// bytes is the store size MaxStateBytes bounds: len(key)+len(value) of
	// every entry plus len(key) of every tombstone, kept up to date by Apply
	// and recomputed by Restore.
	bytes int64
	// seg holds the entries' spilled values (nil when none is), with a reference
	// for this state; spilled is the bytes of it they refer to, inHeap those of the
	// values kept in the heap.
	seg     *segment
	spilled int64
	inHeap  int64
}

func newState() state {
	return state{members: map[uint64]Member{}, entries: map[string]slot{}, tombs: newTombstones()}
}

// clone copies the maps (sharing the immutable values) and the cluster, and pins the
// segment: the clone's holder unpins it (s.seg.unpin) when done. Call it with the
// FSM's lock held.
func (s state) clone() state {
	c := state{
		members: make(map[uint64]Member, len(s.members)),
		entries: make(map[string]slot, len(s.entries)),
		tombs:   s.tombs.clone(),
		bytes:   s.bytes,
		seg:     s.seg.pin(),
		spilled: s.spilled,
		inHeap:  s.inHeap,
	}
	if s.cluster != nil {
		cl := *s.cluster
		c.cluster = &cl
	}
	for k, v := range s.members {
		c.members[k] = v
	}
	for k, v := range s.entries {
		c.entries[k] = v
	}
	return c
}

// New returns an empty FSM: no cluster, no members, no entries.
func New() *FSM {
	return &FSM{st: newState()}
}

// Reset empties the state machine, as New would make it. It must not be called while
// Raft runs over f: the daemon calls it between closing one Raft instance and opening the
// next, when a joining node's own state is replaced by the cluster's.
func (f *FSM) Reset() {
	f.mu.Lock()
	old := f.st.seg
	f.st = newState()
	f.pending = nil
	f.applied = 0
	f.halted = nil
	f.mu.Unlock()
	old.unpin()
}

// EntriesAt returns a view of every configuration entry, sorted by key, and the applied
// index they are all at: one consistent point in time, for a backup. The caller must
// Close the view.
func (f *FSM) EntriesAt() (uint64, *View) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.applied, f.st.view("")
}

// Result is what Apply returns for every LogCommand entry (never nil); Raft
// hands it to the proposer as ApplyFuture.Response().
type Result struct {
	// Index is the Raft log index of the applied entry.
	Index uint64
	// Err is nil on success, else an error wrapping one of the sentinel
	// errors. A failed command changes nothing.
	Err error
	// Version is, for ConfigSet and ConfigDelete, the entry's new version
	// (the log index) on success, or its current version (0 if absent) on
	// ErrVersionConflict.
	Version uint64
	// CID is, for AddMember, the CID given on success, or the expected next
	// CID when the command was refused for carrying a different one.
	CID uint64
}

// Apply applies one committed log entry. For a LogCommand it always returns a
// *Result, including when the entry cannot be decoded. A malformed entry
// (ErrBadCommand) changes nothing, like any refused command; AppliedIndex
// advances past it and the SetOnApply hook is called, as for every applied
// entry. For other log types it returns nil.
//
// An entry this build does not know (ErrUnknownCommand: a newer member
// proposed it) halts the FSM: Result.Err wraps ErrHalted and
// ErrUnknownCommand, AppliedIndex stays before the entry, the SetOnHalt hook
// is called, and every later entry is refused the same way, until a Restore.
// Skipping the entry would make this node's state diverge from the members
// that applied it. Restarted on a build that knows the entry, the node
// replays it from the log.
func (f *FSM) Apply(l *raft.Log) interface{} {
	var res *Result
	var cmd Command
	var decodeErr error
	if l.Type == raft.LogCommand {
		res = &Result{Index: l.Index}
		cmd, decodeErr = Decode(l.Data)
	}
	var placed []slot
	if decodeErr == nil && cmd != nil {
		placed = f.place(cmd, l.Index)
	}
	f.mu.Lock()
	if f.st.seg == nil {
		f.st.seg = f.pending // made by place
	}
	if f.halted != nil {
		err := f.halted
		f.mu.Unlock()
		if res == nil {
			return nil
		}
		res.Err = err
		return res
	}
	f.serveHashesLocked(l.Index, false, false)
	if res != nil {
		if decodeErr != nil {
			res.Err = decodeErr
		} else {
			f.st.apply(cmd, l.Index, res, placed)
		}
		if errors.Is(res.Err, ErrUnknownCommand) {
			return f.halt(l.Index, res) // unlocks
		}
	}
	f.applied = l.Index
	f.serveHashesLocked(l.Index, true, false)
	hook := f.onApply
	f.mu.Unlock()
	f.compactSpill()
	if hook != nil {
		hook(l.Index)
	}
	if res == nil {
		return nil
	}
	return res
}

// SetOnApply sets a hook called with the log index after each Apply (and
// after each Restore, with the restored index), outside the FSM's lock, on
// Raft's FSM goroutine: it must not block. Set it before Raft starts.
func (f *FSM) SetOnApply(fn func(index uint64)) {
	f.mu.Lock()
	f.onApply = fn
	f.mu.Unlock()
}

// AppliedIndex returns the index of the last applied log entry, or the index
// of the last restored snapshot if no entry was applied since.
func (f *FSM) AppliedIndex() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.applied
}

// Cluster returns a copy of the cluster identity, or nil when no cluster
// exists.
func (f *FSM) Cluster() *Cluster {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.cluster.clone()
}

// Members returns the members sorted by CID.
func (f *FSM) Members() []Member {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.sortedMembers()
}

// Member returns the member with the given CID.
func (f *FSM) Member(cid uint64) (Member, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	m, ok := f.st.members[cid]
	return m, ok
}

// MemberByFingerprint returns the member whose certificate fingerprint is fp
// (compared case-insensitively).
func (f *FSM) MemberByFingerprint(fp string) (Member, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	for _, m := range f.st.members {
		if strings.EqualFold(m.Fingerprint, fp) {
			return m, true // fingerprints are unique among members
		}
	}
	return Member{}, false
}

// Get returns the configuration entry for key. The returned Value is a copy. The error
// is a failed read of a spilled value (see SpillTo): the entry exists, its value could
// not be read.
func (f *FSM) Get(key string) (Entry, bool, error) {
	f.mu.RLock()
	sl, ok := f.st.entries[key]
	var seg *segment
	if ok && sl.spilled() {
		seg = f.st.seg.pin()
	}
	f.mu.RUnlock()
	if !ok {
		return Entry{}, false, nil
	}
	defer seg.unpin()
	v, err := sl.copyOf(seg)
	if err != nil {
		return Entry{}, true, err
	}
	return Entry{Key: key, Value: v, Version: sl.version}, true, nil
}

// List returns the entries whose key starts with prefix (a plain string
// prefix: use "dir/" for a subtree), sorted by key. Values are copies.
func (f *FSM) List(prefix string) ([]Entry, error) {
	v := f.ListShared(prefix)
	defer v.Close()
	out := make([]Entry, 0, v.Len())
	for i := range v.Len() {
		e, err := v.At(i)
		if err != nil {
			return nil, err
		}
		e.Value = bytes.Clone(e.Value)
		out = append(out, e)
	}
	return out, nil
}

func (s *state) sortedMembers() []Member {
	out := make([]Member, 0, len(s.members))
	for _, m := range s.members {
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b Member) int { return cmp.Compare(a.CID, b.CID) })
	return out
}

// setEntry stores key's slot, keeping the spilled bytes' account.
func (s *state) setEntry(key string, sl slot) {
	s.dropEntry(key)
	if sl.spilled() {
		s.spilled += sl.size()
	} else {
		s.inHeap += sl.size()
	}
	s.entries[key] = sl
}

// dropEntry removes key's entry, if any, keeping the spilled bytes' account.
func (s *state) dropEntry(key string) {
	if old, ok := s.entries[key]; ok {
		if old.spilled() {
			s.spilled -= old.size()
		} else {
			s.inHeap -= old.size()
		}
		delete(s.entries, key)
	}
}
