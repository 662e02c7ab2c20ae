package fsm

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestStateSizeBound(t *testing.T) {
	type step struct {
		cmd   Command
		err   error
		bytes int64 // StateBytes afterwards
	}
	tests := []struct {
		name  string
		limit int64
		steps []step
	}{
		{"fill to the limit", 20, []step{
			{set("a", "123456789"), nil, 10},
			{set("b", "123456789"), nil, 20},
			{set("c", ""), ErrTooLarge, 20},
		}},
		{"overwrite counts the difference", 20, []step{
			{set("a", "123456789"), nil, 10},
			{set("b", "123456789"), nil, 20},
			{set("a", "1234"), nil, 15},
			{set("b", "1234567890123"), nil, 19},
			{set("b", "12345678901234"), nil, 20},
			{set("b", "123456789012345"), ErrTooLarge, 20},
		}},
		{"a delete keeps the key in the tombstone", 20, []step{
			{set("a", "123456789"), nil, 10},
			{set("bb", "12345678"), nil, 20},
			{del("a"), nil, 11},
			{set("c", "12345678"), nil, 20},
			{set("a", ""), nil, 20}, // the tombstone's byte becomes the entry's
			{set("a", "1"), ErrTooLarge, 20},
		}},
		{"failed CAS does not count", 10, []step{
			{set("a", "12345678"), nil, 9},
			{ConfigSet{Key: "a", Value: make([]byte, 100), IfVersion: u64(7)}, ErrVersionConflict, 9},
			{ConfigSet{Key: "a", Value: make([]byte, 100), IfVersion: u64(1)}, ErrTooLarge, 9},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			withLimits(t, MaxTombstones, tt.limit)
			h := newHarness(t)
			for i, s := range tt.steps {
				before := viewOf(h.f)
				res := h.apply(s.cmd)
				wantErr(t, res.Err, s.err)
				if got := h.f.StateBytes(); got != s.bytes {
					t.Fatalf("step %d: StateBytes = %d, want %d", i, got, s.bytes)
				}
				if res.Err != nil {
					before.Applied = h.idx
					if after := viewOf(h.f); !reflect.DeepEqual(before, after) {
						t.Fatalf("step %d: failed command changed the state", i)
					}
				}
				checkInvariants(t, h.f)
			}
		})
	}
}

func TestStateSizeError(t *testing.T) {
	withLimits(t, MaxTombstones, 10)
	h := newHarness(t)
	res := h.apply(set("key", "12345678"))
	if !errors.Is(res.Err, ErrTooLarge) || res.Version != 0 {
		t.Fatalf("err = %v, version %d; want ErrTooLarge, 0", res.Err, res.Version)
	}
	if want := "configuration store would be 11 bytes, the limit is 10: delete entries first"; !strings.Contains(res.Err.Error(), want) {
		t.Fatalf("err = %q, want it to say %q", res.Err, want)
	}
}

// TestStateOverLimitCanShrink: a state over the limit (restored, or kept
// across a lowered limit) still takes writes that do not grow it.
func TestStateOverLimitCanShrink(t *testing.T) {
	h := newHarness(t)
	h.must(set("a", "123456789"))
	h.must(set("b", "123456789"))
	withLimits(t, MaxTombstones, 10)
	wantErr(t, h.apply(set("c", "")).Err, ErrTooLarge)
	wantErr(t, h.apply(set("a", "1234567890")).Err, ErrTooLarge)
	h.must(set("a", "123456789")) // same size
	h.must(set("a", "1"))
	h.must(del("b"))
	if got := h.f.StateBytes(); got != 2+1 {
		t.Fatalf("StateBytes = %d, want 3", got)
	}
	h.must(set("c", "123456"))
	wantErr(t, h.apply(set("d", "")).Err, ErrTooLarge)
}

func TestDotSegmentsRefused(t *testing.T) {
	for _, k := range []string{".", "..", "a/.", "a/../b", "./a", "x/y/.."} {
		h := newHarness(t)
		res := h.apply(ConfigSet{Key: k, Value: []byte("v")})
		if !errors.Is(res.Err, ErrInvalidKey) {
			t.Errorf("set %q: err = %v, want ErrInvalidKey", k, res.Err)
		}
		// Deleting checks only the older rules, so that keys written before the
		// ban can be removed; an absent one is not found.
		if res := h.apply(del(k)); !errors.Is(res.Err, ErrNotFound) {
			t.Errorf("delete %q: err = %v, want ErrNotFound", k, res.Err)
		}
		if len(h.f.mustList("")) != 0 || h.f.StateBytes() != 0 {
			t.Errorf("%q: state changed", k)
		}
	}
}

// TestConflictResultVersion: a CAS conflict reports the entry's current
// version (0 when absent), for set and delete, and changes nothing.
func TestConflictResultVersion(t *testing.T) {
	tests := []struct {
		name string
		cmd  Command
		want uint64
	}{
		{"set, stale version", ConfigSet{Key: "k", Value: []byte("x"), IfVersion: u64(2)}, 3},
		{"set, if absent", ConfigSet{Key: "k", Value: []byte("x"), IfVersion: u64(0)}, 3},
		{"set, future version", ConfigSet{Key: "k", Value: []byte("x"), IfVersion: u64(99)}, 3},
		{"delete, stale version", ConfigDelete{Key: "k", IfVersion: u64(2)}, 3},
		{"delete, if absent", ConfigDelete{Key: "k", IfVersion: u64(0)}, 3},
		{"set deleted key, its old version", ConfigSet{Key: "gone", Value: []byte("x"), IfVersion: u64(4)}, 0},
		{"set deleted key, its deletion", ConfigSet{Key: "gone", Value: []byte("x"), IfVersion: u64(5)}, 0},
		{"delete deleted key, its old version", ConfigDelete{Key: "gone", IfVersion: u64(4)}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			h.must(set("k", "1"))    // 1
			h.must(set("k", "2"))    // 2
			h.must(set("k", "3"))    // 3
			h.must(set("gone", "4")) // 4
			h.must(del("gone"))      // 5
			before := viewOf(h.f)
			bytes := h.f.StateBytes()
			res := h.apply(tt.cmd)
			wantErr(t, res.Err, ErrVersionConflict)
			if res.Version != tt.want {
				t.Fatalf("Result.Version = %d, want %d", res.Version, tt.want)
			}
			before.Applied = h.idx
			if !reflect.DeepEqual(viewOf(h.f), before) || h.f.StateBytes() != bytes {
				t.Fatalf("conflict changed the state")
			}
			if tombs, _ := tombsOf(h.f); tombs != "gone@5" {
				t.Fatalf("tombstones = %q, want gone@5", tombs)
			}
		})
	}
}
