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
	// halted is set at the first entry this build cannot apply (see ErrHalted).
	halted error
	onHalt func(err error)
}

var _ raft.FSM = (*FSM)(nil)

// state is the replicated state. Byte slices inside it are never modified in
// place, only replaced, so snapshots and readers may share them.
type state struct {
	cluster *Cluster
	members map[uint64]Member
	entries map[string]Entry
	// tombs are the deletions remembered for watchers (see Changes).
	tombs tombstones
	// bytes is the store size MaxStateBytes bounds: len(key)+len(value) of
	// every entry plus len(key) of every tombstone, kept up to date by Apply
	// and recomputed by Restore.
	bytes int64
}

func newState() state {
	return state{members: map[uint64]Member{}, entries: map[string]Entry{}, tombs: newTombstones()}
}

// clone copies the maps (sharing the immutable values) and the cluster.
func (s state) clone() state {
	c := state{
		members: make(map[uint64]Member, len(s.members)),
		entries: make(map[string]Entry, len(s.entries)),
		tombs:   s.tombs.clone(),
		bytes:   s.bytes,
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
	f.st = newState()
	f.applied = 0
	f.halted = nil
	f.mu.Unlock()
}

// EntriesAt returns every configuration entry, sorted by key, and the applied index they
// are all at: one consistent point in time, for a backup. Values are shared, not copied:
// they are never changed in place.
func (f *FSM) EntriesAt() (uint64, []Entry) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.applied, f.st.sortedEntries()
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
	f.mu.Lock()
	if f.halted != nil {
		err := f.halted
		f.mu.Unlock()
		if res == nil {
			return nil
		}
		res.Err = err
		return res
	}
	if res != nil {
		if decodeErr != nil {
			res.Err = decodeErr
		} else {
			f.st.apply(cmd, l.Index, res)
		}
		if errors.Is(res.Err, ErrUnknownCommand) {
			return f.halt(l.Index, res) // unlocks
		}
	}
	f.applied = l.Index
	hook := f.onApply
	f.mu.Unlock()
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

// Get returns the configuration entry for key. The returned Value is a copy.
func (f *FSM) Get(key string) (Entry, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	e, ok := f.st.entries[key]
	e.Value = bytes.Clone(e.Value)
	return e, ok
}

// List returns the entries whose key starts with prefix (a plain string
// prefix: use "dir/" for a subtree), sorted by key. Values are copies.
func (f *FSM) List(prefix string) []Entry {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := []Entry{}
	for k, e := range f.st.entries {
		if strings.HasPrefix(k, prefix) {
			e.Value = bytes.Clone(e.Value)
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b Entry) int { return strings.Compare(a.Key, b.Key) })
	return out
}

func (s *state) sortedMembers() []Member {
	out := make([]Member, 0, len(s.members))
	for _, m := range s.members {
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b Member) int { return cmp.Compare(a.CID, b.CID) })
	return out
}

func (s *state) sortedEntries() []Entry {
	out := make([]Entry, 0, len(s.entries))
	for _, e := range s.entries {
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b Entry) int { return strings.Compare(a.Key, b.Key) })
	return out
}
