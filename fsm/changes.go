package fsm

import (
	"cmp"
	"slices"
	"strings"
)

// Change is one entry's latest state since a version: a value, or a deletion.
type Change struct {
	Key string
	// Version is the log index of the entry's last change: the set that gave
	// it Value, or the delete that removed it.
	Version uint64
	// Value is the entry's value (a copy); nil when Deleted.
	Value []byte
	// Deleted is true when Key was deleted at Version.
	Deleted bool
}

// Changes returns, in version order, the latest state of every key under prefix whose
// version is above from: live entries and tombstones. reset is true when from < Horizon
// (deletions may have been forgotten): then it returns every live entry under prefix
// (no tombstones), and the caller must treat the answer as the whole state.
//
// The prefix is a plain string prefix, as for List. A key changed several
// times since from shows once, with its latest version. The horizon is the
// highest version of any tombstone dropped to keep at most MaxTombstones.
//
// To resume without gaps, read AppliedIndex before calling Changes and pass
// max(from, that index, the last change's version) as the next from: every
// change at or below it has been seen. The answer is empty, not nil, when
// nothing changed. Values are copies; the scan is linear in the number of
// entries and tombstones and copies only the values it returns. The error is a failed
// read of a spilled value (see SpillTo).
func (f *FSM) Changes(prefix string, from uint64) (changes []Change, reset bool, err error) {
	type found struct {
		c  Change
		sl slot // of a live entry
	}
	f.mu.RLock()
	reset = from < f.st.tombs.horizon
	var all []found
	for k, e := range f.st.entries {
		if (reset || e.version > from) && strings.HasPrefix(k, prefix) {
			all = append(all, found{c: Change{Key: k, Version: e.version}, sl: e})
		}
	}
	if !reset {
		for k, v := range f.st.tombs.byKey {
			if v > from && strings.HasPrefix(k, prefix) {
				all = append(all, found{c: Change{Key: k, Version: v, Deleted: true}})
			}
		}
	}
	seg := f.st.seg.pin()
	f.mu.RUnlock()
	defer seg.unpin()

	slices.SortFunc(all, func(a, b found) int {
		// Versions are unique log indexes; the key only makes a corrupt state
		// sort the same everywhere.
		return cmp.Or(cmp.Compare(a.c.Version, b.c.Version), strings.Compare(a.c.Key, b.c.Key))
	})
	changes = make([]Change, 0, len(all))
	for _, x := range all {
		if !x.c.Deleted {
			v, err := x.sl.copyOf(seg)
			if err != nil {
				return nil, false, err
			}
			x.c.Value = v
		}
		changes = append(changes, x.c)
	}
	return changes, reset, nil
}

// StateBytes returns the size of the configuration store as MaxStateBytes
// counts it: the keys and values of the entries plus the keys of the
// tombstones.
func (f *FSM) StateBytes() int64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.bytes
}
