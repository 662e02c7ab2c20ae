package mailstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"strconv"
	"testing"
	"time"
)

// TestCheckCost measures Check on a store of PMGCM_CHECK_COST messages (skipped without
// it): the figures docs/performance.md and the README quote.
//
//	PMGCM_CHECK_COST=30000 go test -run TestCheckCost -v ./mailstore/
func TestCheckCost(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("PMGCM_CHECK_COST"))
	if n <= 0 {
		t.Skip("set PMGCM_CHECK_COST=N to measure a check of N messages")
	}
	s := newStore(t, 1)
	body := message("cost", 4<<10)
	sum := sha256.Sum256(body)
	now := time.Now()
	var evs []Event
	for seq := uint64(1); seq <= uint64(n); seq++ {
		id := MakeID(9, seq)
		evs = append(evs, Event{Origin: 9, Seq: seq, Kind: KindNew, MsgID: id, At: now,
			Msg: &Meta{ID: id, Origin: 9, Seq: seq, From: "a@example.org", To: []string{"b@example.com"},
				Size: int64(len(body)), SHA256: hex.EncodeToString(sum[:]), State: StateQuarantined, Received: now}})
		if len(evs) == 1000 || seq == uint64(n) {
			if _, err := s.ApplyEvents(evs); err != nil {
				t.Fatal(err)
			}
			evs = evs[:0]
		}
	}
	start := time.Now()
	for seq := uint64(1); seq <= uint64(n); seq++ {
		id := MakeID(9, seq)
		w, _, err := s.BeginBody(id)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(body); err != nil {
			t.Fatal(err)
		}
		if err := w.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("setup: %d bodies of %d bytes stored in %s", n, len(body), time.Since(start).Round(time.Millisecond))
	for _, verify := range []bool{false, false, true} {
		start := time.Now()
		d, err := s.Check(context.Background(), CheckOptions{Bucket: -1, Verify: verify})
		if err != nil {
			t.Fatal(err)
		}
		if d.Messages != n || d.Bad != 0 {
			t.Fatalf("checked %d, bad %d", d.Messages, d.Bad)
		}
		t.Logf("check of %d messages, verify=%v: %s", n, verify, time.Since(start).Round(time.Millisecond))
	}
	start = time.Now()
	_, err := s.Check(context.Background(), CheckOptions{Bucket: 7, Entries: func(int, CheckEntry) {}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("listing one bucket (1/256) of %d messages: %s", n, time.Since(start).Round(time.Millisecond))
}
