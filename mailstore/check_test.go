package mailstore

import (
	"context"
	"os"
	"testing"
	"time"
)

func check(t *testing.T, s *Store, opts CheckOptions) (CheckDigest, map[string]CheckEntry) {
	t.Helper()
	got := map[string]CheckEntry{}
	opts.Entries = func(b int, e CheckEntry) {
		if b != BucketOf(e.ID) {
			t.Errorf("%s in bucket %d, want %d", e.ID, b, BucketOf(e.ID))
		}
		got[e.ID] = e
	}
	d, err := s.Check(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	return d, got
}

// TestCheckDigests: two stores in sync digest alike, across batches; a body of the wrong
// size, a corrupt one (verified checks only), a missing one and a state difference each
// change the digest of exactly the message's bucket.
func TestCheckDigests(t *testing.T) {
	a, b := newStore(t, 1), newStore(t, 2)
	b.setLinger(0) // its thousands of bodies come one at a time (copyBody)
	var ids []string
	for i := 0; i < checkBatch+50; i++ {
		ids = append(ids, accept(t, a, message("m", 10)).ID)
	}
	for _, id := range replicate(t, a, b) {
		copyBody(t, a, b, id)
	}
	if _, err := a.SetState(ids[0], StateDeleted); err != nil {
		t.Fatal(err)
	}
	replicate(t, a, b)
	da, ea := check(t, a, CheckOptions{Bucket: -1})
	db, _ := check(t, b, CheckOptions{Bucket: -1})
	if da.SHA256 != db.SHA256 || da.Messages != len(ids)-1 || len(ea) != len(ids)-1 || da.Bad != 0 {
		t.Fatalf("in sync: %d/%d messages, digests %s %s, bad %d", da.Messages, db.Messages, da.SHA256, db.SHA256, da.Bad)
	}

	// Same size, other bytes: only a verified check sees it.
	victim := ids[1]
	body := readBody(t, b, victim)
	body[len(body)-1] ^= 0xff
	if err := os.WriteFile(b.BodyPath(victim), body, 0o640); err != nil {
		t.Fatal(err)
	}
	if d, _ := check(t, b, CheckOptions{Bucket: -1}); d.SHA256 != da.SHA256 {
		t.Fatal("a size-only check saw a same-size corruption")
	}
	dv, ev := check(t, b, CheckOptions{Bucket: -1, Verify: true})
	if ev[victim].Body != BodyCorrupt || dv.Bad != 1 {
		t.Fatalf("verified check: %s is %q, bad %d", victim, ev[victim].Body, dv.Bad)
	}
	diff := 0
	for i := range dv.Buckets {
		if dv.Buckets[i] != da.Buckets[i] {
			diff++
			if i != BucketOf(victim) {
				t.Fatalf("bucket %d differs, the victim is in %d", i, BucketOf(victim))
			}
		}
	}
	if diff != 1 {
		t.Fatalf("%d buckets differ, want 1", diff)
	}
	// One only: bucket and since filters.
	_, one := check(t, b, CheckOptions{Bucket: BucketOf(victim), Verify: true})
	for id := range one {
		if BucketOf(id) != BucketOf(victim) {
			t.Fatalf("bucket filter let %s through", id)
		}
	}
	if d, _ := check(t, b, CheckOptions{Bucket: -1, Since: time.Now().Add(time.Hour)}); d.Messages != 0 || d.Skipped != len(ids)-1 {
		t.Fatalf("since in the future: %d checked, %d skipped", d.Messages, d.Skipped)
	}

	// Truncated, and gone.
	if err := os.Truncate(b.BodyPath(ids[2]), 3); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(b.BodyPath(ids[3])); err != nil {
		t.Fatal(err)
	}
	if _, err := b.SetState(ids[4], StateReleased); err != nil {
		t.Fatal(err)
	}
	_, eb := check(t, b, CheckOptions{Bucket: -1})
	if eb[ids[2]].Body != BodyWrongSize || eb[ids[3]].Body != BodyNoFile || eb[ids[4]].State != StateReleased {
		t.Fatalf("got %+v %+v %+v", eb[ids[2]], eb[ids[3]], eb[ids[4]])
	}
	if !a.HasBody(ids[2]) || !b.HasBody(ids[3]) {
		t.Fatal("a check changed the store")
	}
}
