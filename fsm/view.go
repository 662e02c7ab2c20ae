package fsm

import (
	"slices"
	"strings"
)

// View is the configuration entries under a prefix at one point in time, sorted by
// key, read one at a time: a streaming reader encodes each entry with no lock held and
// holds one value at a time, not a copy of the data. It costs a key and a slot per
// entry. Close it when done: it holds the segment of the spilled values (see SpillTo).
// A View is used by one goroutine.
type View struct {
	keys  []string
	slots []slot
	seg   *segment
	buf   []byte
}

// ListShared returns a View of the entries whose key starts with prefix.
func (f *FSM) ListShared(prefix string) *View {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.view(prefix)
}

// view returns the entries under prefix; call it with the FSM's lock held.
func (s *state) view(prefix string) *View {
	v := &View{}
	for k := range s.entries {
		if strings.HasPrefix(k, prefix) {
			v.keys = append(v.keys, k)
		}
	}
	slices.Sort(v.keys)
	v.slots = make([]slot, len(v.keys))
	for i, k := range v.keys {
		v.slots[i] = s.entries[k]
	}
	v.seg = s.seg.pin()
	return v
}

// Len is the number of entries.
func (v *View) Len() int { return len(v.keys) }

// Key is entry i's key, and Size the length of its value, both without a read.
func (v *View) Key(i int) string { return v.keys[i] }

func (v *View) Size(i int) int64 { return v.slots[i].size() }

// At returns entry i. Its Value is valid until the next call of At and must not be
// modified: a value kept in the heap is the state's own, a spilled one is read into a
// buffer the View reuses. The error is a failed read of a spilled value.
func (v *View) At(i int) (Entry, error) {
	sl := v.slots[i]
	val, err := sl.value(v.seg, v.buf)
	if err != nil {
		return Entry{}, err
	}
	if sl.spilled() {
		v.buf = val
	}
	return Entry{Key: v.keys[i], Value: val, Version: sl.version}, nil
}

// Close releases the view's hold on the spilled values; At must not be called after.
func (v *View) Close() {
	v.seg.unpin()
	v.seg = nil
}
