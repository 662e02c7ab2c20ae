package fsm

import (
	"cmp"
	"slices"
)

// MaxTombstones is how many deletions the store remembers for watchers. When a
// delete takes it over, the oldest tombstone is dropped and the horizon rises
// to its version: a watcher resuming from below the horizon gets a reset.
const MaxTombstones = 10000

// tombstoneLimit is MaxTombstones; tests lower it.
var tombstoneLimit = MaxTombstones

// tombstone records that Key was deleted at log index Version.
type tombstone struct {
	Key     string `json:"key"`
	Version uint64 `json:"version"`
}

// tombstones is the set of remembered deletions, at most one per key, with
// the order in which they are dropped.
//
// The order is by version, which is the order of insertion: Apply runs at
// increasing log indexes, and Restore inserts in the snapshot's (checked)
// version order. Nothing here depends on map iteration order.
type tombstones struct {
	// byKey maps a deleted key to the version of its tombstone.
	byKey map[string]uint64
	// order holds the tombstones by version from order[head] on. An item is
	// stale when byKey no longer maps its key to its version (the key was set
	// again, or deleted again later); stale items are skipped and compacted.
	order []tombstone
	head  int
	// horizon is the highest version of any tombstone ever dropped (0: none).
	horizon uint64
}

func newTombstones() tombstones {
	return tombstones{byKey: map[string]uint64{}}
}

// live reports whether the queued item tb is a current tombstone.
func (t *tombstones) live(tb tombstone) bool {
	v, ok := t.byKey[tb.Key]
	return ok && v == tb.Version
}

// add records the deletion of key at version, which must be above the version
// of every tombstone already held.
func (t *tombstones) add(key string, version uint64) {
	t.byKey[key] = version
	t.order = append(t.order, tombstone{Key: key, Version: version})
}

// remove forgets the tombstone of key, if any, and reports whether there was one.
func (t *tombstones) remove(key string) bool {
	if _, ok := t.byKey[key]; !ok {
		return false
	}
	delete(t.byKey, key)
	t.compact()
	return true
}

// trim drops the oldest tombstones until at most limit remain, raising the
// horizon, and returns the number of key bytes it freed.
func (t *tombstones) trim(limit int) (freed int64) {
	for len(t.byKey) > limit && t.head < len(t.order) {
		tb := t.order[t.head]
		t.order[t.head] = tombstone{} // let the key string go
		t.head++
		if !t.live(tb) {
			continue
		}
		delete(t.byKey, tb.Key)
		t.horizon = max(t.horizon, tb.Version)
		freed += int64(len(tb.Key))
	}
	t.compact()
	return freed
}

// compact rebuilds order when stale or dropped items outnumber the live ones,
// so that its size stays within a constant factor of len(byKey).
func (t *tombstones) compact() {
	if len(t.order) <= 2*len(t.byKey)+64 {
		return
	}
	t.order = t.sorted()
	t.head = 0
}

// sorted returns the live tombstones by version, in a new slice. They are
// in order already; the sort (linear on sorted input) only makes sure.
func (t *tombstones) sorted() []tombstone {
	out := make([]tombstone, 0, len(t.byKey))
	for _, tb := range t.order[t.head:] {
		if t.live(tb) {
			out = append(out, tb)
		}
	}
	slices.SortFunc(out, func(a, b tombstone) int { return cmp.Compare(a.Version, b.Version) })
	return out
}

// clone returns an independent copy, compacted.
func (t *tombstones) clone() tombstones {
	c := tombstones{byKey: make(map[string]uint64, len(t.byKey)), order: t.sorted(), horizon: t.horizon}
	for k, v := range t.byKey {
		c.byKey[k] = v
	}
	return c
}
