package fsm

import (
	"slices"
	"strings"
)

// ListShared is List without the copies: the entries whose key starts with prefix, sorted
// by key, at one point in time, whose Values share the state's byte slices (the state
// replaces a value, never changes it in place). Callers must not modify the values. It
// costs an Entry header per key, not a copy of the data: a streaming reader encodes from
// it with no lock held.
func (f *FSM) ListShared(prefix string) []Entry {
	f.mu.RLock()
	out := []Entry{}
	for k, e := range f.st.entries {
		if strings.HasPrefix(k, prefix) {
			out = append(out, e)
		}
	}
	f.mu.RUnlock()
	slices.SortFunc(out, func(a, b Entry) int { return strings.Compare(a.Key, b.Key) })
	return out
}
