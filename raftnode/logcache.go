package raftnode

import (
	"fmt"
	"sync"

	"github.com/hashicorp/raft"
)

// logCacheBytes bounds the bytes of the log entries the log cache holds, beside its count
// (logCacheSize). raft.LogCache bounds only the count: 512 entries of 1 MiB values
// (fsm.MaxValueLen) would keep 512 MiB in memory, a second copy of the newest data on
// every node. 8 MiB holds the whole count of small entries (512 of 1 KiB are 0.7 MiB) and
// a few batches of large ones; an entry past the bound is read back from the store.
const logCacheBytes = 8 << 20

// logEntryOverhead is what a cached entry costs beside its data: the raft.Log and its
// slot.
const logEntryOverhead = 128

// logCache is raft.LogCache, the newest log entries in a ring buffer in front of the log
// store, with a bound on their bytes as well as their count: when the entries cached
// hold more than maxBytes, the oldest are dropped. Reads, writes and invalidation are
// raft.LogCache's: an entry is cached only once the store has it, a read checks the
// cached entry's index, and a DeleteRange empties the cache.
type logCache struct {
	store    raft.LogStore
	maxBytes int

	mu    sync.RWMutex
	ring  []*raft.Log
	bytes int
	// low is the lowest index that may still be cached: eviction starts there.
	low uint64
}

var _ raft.MonotonicLogStore = (*logCache)(nil)

// newLogCache returns a cache of at most entries entries and maxBytes bytes over store.
func newLogCache(entries, maxBytes int, store raft.LogStore) (*logCache, error) {
	if entries <= 0 || maxBytes <= 0 {
		return nil, fmt.Errorf("log cache of %d entries and %d bytes: both must be positive", entries, maxBytes)
	}
	return &logCache{store: store, maxBytes: maxBytes, ring: make([]*raft.Log, entries)}, nil
}

// logSize is what entry l counts against the byte bound.
func logSize(l *raft.Log) int { return len(l.Data) + len(l.Extensions) + logEntryOverhead }

// IsMonotonic implements raft.MonotonicLogStore: the store's answer.
func (c *logCache) IsMonotonic() bool {
	if s, ok := c.store.(raft.MonotonicLogStore); ok {
		return s.IsMonotonic()
	}
	return false
}

// GetLog returns the entry at idx from the cache, or else from the store.
func (c *logCache) GetLog(idx uint64, log *raft.Log) error {
	c.mu.RLock()
	cached := c.ring[idx%uint64(len(c.ring))]
	c.mu.RUnlock()
	if cached != nil && cached.Index == idx {
		*log = *cached
		return nil
	}
	return c.store.GetLog(idx, log)
}

// StoreLog stores one entry.
func (c *logCache) StoreLog(log *raft.Log) error { return c.StoreLogs([]*raft.Log{log}) }

// StoreLogs stores the entries, then caches them: only on success.
func (c *logCache) StoreLogs(logs []*raft.Log) error {
	if err := c.store.StoreLogs(logs); err != nil {
		return fmt.Errorf("unable to store logs within log store, err: %q", err)
	}
	if len(logs) == 0 {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	n := uint64(len(c.ring))
	if c.bytes == 0 {
		c.low = logs[0].Index
	}
	var newest uint64
	for _, l := range logs {
		slot := l.Index % n
		if old := c.ring[slot]; old != nil {
			c.bytes -= logSize(old)
		}
		c.ring[slot] = l
		c.bytes += logSize(l)
		c.low = min(c.low, l.Index)
		newest = max(newest, l.Index)
	}
	c.evict(newest)
	return nil
}

// evict drops the oldest entries until the cache holds at most maxBytes. Entries below
// newest-len(ring)+1 are no longer in the ring, so the scan starts at the higher of that
// and low, and each index is passed once: the work is bounded by the entries stored.
func (c *logCache) evict(newest uint64) {
	if c.bytes <= c.maxBytes {
		return
	}
	n := uint64(len(c.ring))
	if newest >= n {
		c.low = max(c.low, newest-n+1)
	}
	for c.bytes > c.maxBytes && c.low <= newest {
		slot := c.low % n
		if e := c.ring[slot]; e != nil && e.Index == c.low {
			c.bytes -= logSize(e)
			c.ring[slot] = nil
		}
		c.low++
	}
}

// FirstIndex returns the store's first index.
func (c *logCache) FirstIndex() (uint64, error) { return c.store.FirstIndex() }

// LastIndex returns the store's last index.
func (c *logCache) LastIndex() (uint64, error) { return c.store.LastIndex() }

// DeleteRange empties the cache, then deletes the range from the store.
func (c *logCache) DeleteRange(lo, hi uint64) error {
	c.mu.Lock()
	c.ring = make([]*raft.Log, len(c.ring))
	c.bytes = 0
	c.low = 0
	c.mu.Unlock()
	return c.store.DeleteRange(lo, hi)
}
