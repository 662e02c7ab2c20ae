package raftnode

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/hashicorp/raft"
)

// countingStore is an in-memory log store that counts reads and can fail writes.
type countingStore struct {
	*raft.InmemStore
	reads int
	fail  bool
}

func (s *countingStore) GetLog(idx uint64, l *raft.Log) error {
	s.reads++
	return s.InmemStore.GetLog(idx, l)
}

func (s *countingStore) StoreLogs(logs []*raft.Log) error {
	if s.fail {
		return errors.New("disk full")
	}
	return s.InmemStore.StoreLogs(logs)
}

func entry(idx uint64, size int) *raft.Log {
	return &raft.Log{Index: idx, Term: 1, Type: raft.LogCommand, Data: bytes.Repeat([]byte{byte(idx)}, size)}
}

// cachedBytes checks the cache's byte count against its ring and returns it.
func cachedBytes(t *testing.T, c *logCache) int {
	t.Helper()
	sum := 0
	for _, l := range c.ring {
		if l != nil {
			sum += logSize(l)
		}
	}
	if sum != c.bytes {
		t.Fatalf("the cache counts %d bytes, its ring holds %d", c.bytes, sum)
	}
	return sum
}

// TestLogCacheByteBound: large entries are cached up to the byte bound, the newest first,
// and the older ones are read from the store; small ones up to the count.
func TestLogCacheByteBound(t *testing.T) {
	s := &countingStore{InmemStore: raft.NewInmemStore()}
	c, err := newLogCache(512, 1<<20, s)
	if err != nil {
		t.Fatal(err)
	}
	for i := uint64(1); i <= 100; i++ {
		if err := c.StoreLogs([]*raft.Log{entry(i, 100<<10)}); err != nil {
			t.Fatal(err)
		}
		if b := cachedBytes(t, c); b > 1<<20 {
			t.Fatalf("after entry %d the cache holds %d bytes, over its bound of %d", i, b, 1<<20)
		}
	}
	var l raft.Log
	for i := uint64(100); i > 91; i-- { // the newest 9 of 100 KiB fit in 1 MiB
		if err := c.GetLog(i, &l); err != nil || l.Index != i || len(l.Data) != 100<<10 || l.Data[0] != byte(i) {
			t.Fatalf("GetLog(%d) = %d, %d bytes, %v", i, l.Index, len(l.Data), err)
		}
	}
	if s.reads != 0 {
		t.Fatalf("the newest entries took %d store reads, want 0", s.reads)
	}
	if err := c.GetLog(50, &l); err != nil || l.Index != 50 || l.Data[0] != 50 || s.reads != 1 {
		t.Fatalf("GetLog(50) = %d, %v after %d store reads; want it from the store", l.Index, err, s.reads)
	}

	// An entry over the whole bound is stored, not cached.
	if err := c.StoreLogs([]*raft.Log{entry(101, 2<<20)}); err != nil {
		t.Fatal(err)
	}
	if b := cachedBytes(t, c); b > 1<<20 {
		t.Fatalf("the cache holds %d bytes after an entry over its bound", b)
	}
	if err := c.GetLog(101, &l); err != nil || len(l.Data) != 2<<20 {
		t.Fatalf("GetLog(101) = %d bytes, %v", len(l.Data), err)
	}

	// Small entries: the count bounds, as raft.LogCache's.
	small, _ := newLogCache(8, 1<<20, raft.NewInmemStore())
	for i := uint64(1); i <= 20; i++ {
		if err := small.StoreLogs([]*raft.Log{entry(i, 10)}); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(small.ring); n != 8 {
		t.Fatalf("ring of %d", n)
	}
	for _, l := range small.ring {
		if l == nil || l.Index < 13 {
			t.Fatalf("the ring of 8 after 20 small entries holds %+v, want 13-20", l)
		}
	}
}

// TestLogCacheStoreFailure: entries the store refused are not cached.
func TestLogCacheStoreFailure(t *testing.T) {
	s := &countingStore{InmemStore: raft.NewInmemStore(), fail: true}
	c, _ := newLogCache(16, 1<<20, s)
	if err := c.StoreLogs([]*raft.Log{entry(1, 10)}); err == nil {
		t.Fatal("StoreLogs succeeded over a failing store")
	}
	var l raft.Log
	if err := c.GetLog(1, &l); !errors.Is(err, raft.ErrLogNotFound) {
		t.Fatalf("GetLog of a refused entry = %v, want ErrLogNotFound", err)
	}
	if cachedBytes(t, c) != 0 {
		t.Fatal("a refused entry counts in the cache")
	}
}

// TestLogCacheMatchesStore: under random appends, truncations of the tail (a follower's
// conflicting entries) and rewrites with other data, and compaction of the head, every
// read through the cache returns what the store holds, and the bound holds throughout.
func TestLogCacheMatchesStore(t *testing.T) {
	rng := rand.New(rand.NewPCG(16, 16))
	s := &countingStore{InmemStore: raft.NewInmemStore()}
	const maxBytes = 64 << 10
	c, _ := newLogCache(32, maxBytes, s)
	var first, last uint64 = 1, 0
	gen := 0
	for step := 0; step < 3000; step++ {
		switch r := rng.IntN(10); {
		case r < 7: // append a batch
			gen++
			var batch []*raft.Log
			for k := 0; k < 1+rng.IntN(8); k++ {
				last++
				l := entry(last, rng.IntN(16<<10))
				l.Term = uint64(gen)
				batch = append(batch, l)
			}
			if err := c.StoreLogs(batch); err != nil {
				t.Fatal(err)
			}
		case r < 8 && last >= first: // truncate the tail
			from := first + uint64(rng.IntN(int(last-first+1)))
			if err := c.DeleteRange(from, last); err != nil {
				t.Fatal(err)
			}
			last = from - 1
		case r < 9 && last > first: // compact the head
			to := first + uint64(rng.IntN(int(last-first)))
			if err := c.DeleteRange(first, to); err != nil {
				t.Fatal(err)
			}
			first = to + 1
		}
		if b := cachedBytes(t, c); b > maxBytes {
			t.Fatalf("step %d: the cache holds %d bytes, over %d", step, b, maxBytes)
		}
		for k := 0; k < 4 && last >= first; k++ {
			idx := first + uint64(rng.IntN(int(last-first+1)))
			var got, want raft.Log
			if err := c.GetLog(idx, &got); err != nil {
				t.Fatalf("step %d: GetLog(%d): %v", step, idx, err)
			}
			if err := s.InmemStore.GetLog(idx, &want); err != nil {
				t.Fatal(err)
			}
			if got.Index != want.Index || got.Term != want.Term || !bytes.Equal(got.Data, want.Data) {
				t.Fatalf("step %d: GetLog(%d) through the cache = index %d term %d, the store has index %d term %d",
					step, idx, got.Index, got.Term, want.Index, want.Term)
			}
		}
	}
}
