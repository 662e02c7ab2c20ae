package fsm

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestHashAtAgreesAndDiffers: two state machines fed the same log hash alike at every
// index; one more write makes them differ.
func TestHashAtAgreesAndDiffers(t *testing.T) {
	a, b := withCluster(t, 3), withCluster(t, 3)
	for _, h := range []*harness{a, b} {
		h.must(ConfigSet{Key: "mail/relay_domains", Value: []byte("example.com")})
	}
	ctx := context.Background()
	ha, err := a.f.HashAt(ctx, a.idx)
	if err != nil {
		t.Fatal(err)
	}
	hb, err := b.f.HashAt(ctx, b.idx)
	if err != nil {
		t.Fatal(err)
	}
	if ha != hb || ha.Members != 3 || ha.Entries != 1 {
		t.Fatalf("same log, hashes %+v and %+v", ha, hb)
	}
	b.must(ConfigSet{Key: "x", Value: []byte("1")})
	a.must(ConfigSet{Key: "x", Value: []byte("2")})
	ha, _ = a.f.HashAt(ctx, a.idx)
	hb, _ = b.f.HashAt(ctx, b.idx)
	if ha.SHA256 == hb.SHA256 {
		t.Fatal("different values, same hash")
	}
}

// TestHashAtWaitsForIndex: a request for a future index is served in the apply path
// at exactly that index, not after later entries; a passed index is refused.
func TestHashAtWaitsForIndex(t *testing.T) {
	h := withCluster(t, 1)
	ref := withCluster(t, 1)
	ref.must(ConfigSet{Key: "k", Value: []byte("1")})
	want, err := ref.f.HashAt(context.Background(), ref.idx)
	if err != nil {
		t.Fatal(err)
	}
	target := h.idx + 1
	got := make(chan StateHash, 1)
	errc := make(chan error, 1)
	go func() {
		s, err := h.f.HashAt(context.Background(), target)
		errc <- err
		got <- s
	}()
	// Wait until the request is registered, then apply past it.
	deadline := time.Now().Add(5 * time.Second)
	for {
		h.f.mu.RLock()
		n := len(h.f.hashReqs)
		h.f.mu.RUnlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("request never registered")
		}
		time.Sleep(time.Millisecond)
	}
	h.must(ConfigSet{Key: "k", Value: []byte("1")})
	h.must(ConfigSet{Key: "k", Value: []byte("2")})
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if s := <-got; s != want {
		t.Fatalf("hash at %d = %+v, want %+v", target, s, want)
	}
	if _, err := h.f.HashAt(context.Background(), target); !errors.Is(err, ErrIndexPassed) {
		t.Fatalf("passed index: err %v, want ErrIndexPassed", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := h.f.HashAt(ctx, h.idx+5); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("unreached index: err %v", err)
	}
	if len(h.f.hashReqs) != 0 {
		t.Fatal("abandoned request left behind")
	}
}

// TestNoOpMarkKeepsTheHash: the consistency check's mark, a delete "only if absent",
// fails whatever the store holds, changes nothing, and is applied at an index.
func TestNoOpMarkKeepsTheHash(t *testing.T) {
	h := withCluster(t, 2)
	h.must(ConfigSet{Key: "pmgcm/check-mark-neighbour", Value: []byte("v")})
	before, err := h.f.HashAt(context.Background(), h.idx)
	if err != nil {
		t.Fatal(err)
	}
	zero := uint64(0)
	if res := h.apply(ConfigDelete{Key: "pmgcm/check-mark", IfVersion: &zero}); !errors.Is(res.Err, ErrNotFound) {
		t.Fatalf("mark on an absent key: %v", res.Err)
	}
	if got, _ := h.f.HashAt(context.Background(), h.idx); got.SHA256 != before.SHA256 {
		t.Fatal("the mark on an absent key changed the state")
	}
	h.must(ConfigSet{Key: "x", Value: []byte("1")})
	h.apply(ConfigDelete{Key: "x"}) // a tombstone, then the mark on a present key
	h.must(ConfigSet{Key: "pmgcm/check-mark", Value: []byte("someone's")})
	mid, _ := h.f.HashAt(context.Background(), h.idx)
	if res := h.apply(ConfigDelete{Key: "pmgcm/check-mark", IfVersion: &zero}); !errors.Is(res.Err, ErrVersionConflict) {
		t.Fatalf("mark on a present key: %v", res.Err)
	}
	after, _ := h.f.HashAt(context.Background(), h.idx)
	if after.SHA256 != mid.SHA256 || after.Index != h.idx || h.f.AppliedIndex() != h.idx {
		t.Fatalf("the mark changed the state: %+v -> %+v", mid, after)
	}
	if _, ok := h.f.mustGet("pmgcm/check-mark"); !ok {
		t.Fatal("the mark deleted an entry")
	}
}
