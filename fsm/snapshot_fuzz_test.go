package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/hashicorp/raft"
)

// persisted returns the snapshot of f.
func persisted(f *FSM) ([]byte, error) {
	snap, err := f.Snapshot()
	if err != nil {
		return nil, err
	}
	sink := &testSink{}
	if err := snap.Persist(sink); err != nil {
		return nil, err
	}
	return sink.Bytes(), nil
}

// FuzzRestore checks that Restore, the decoder of a snapshot a leader sends, never
// panics, fails only with ErrBadSnapshot and then leaves the state as it was, and that
// a snapshot it accepts persists again to a form that restores to the same snapshot.
func FuzzRestore(f *testing.F) {
	seed := New()
	for i, c := range allCommands() {
		b, err := Encode(c)
		if err != nil {
			f.Fatal(err)
		}
		seed.Apply(&raft.Log{Type: raft.LogCommand, Index: uint64(i + 1), Data: b})
	}
	for _, fs := range []*FSM{New(), seed} {
		b, err := persisted(fs)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	golden, _ := filepath.Glob(filepath.Join("testdata", "snapshot-format*.golden"))
	for _, p := range golden {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte(seal(`{"trailer":{"cluster":false,"members":0,"entries":1,"tombstones":0,"sha256":"%s"}}`,
		`{"format":2,"applied_index":3,"horizon":0}`, `{"entry":{"key":"a","value":"AA==","version":2}}`)))
	before, err := persisted(seed)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		target := New()
		if err := target.Restore(io.NopCloser(bytes.NewReader(before))); err != nil {
			t.Fatal(err)
		}
		err := target.Restore(io.NopCloser(bytes.NewReader(b)))
		if err != nil {
			if !errors.Is(err, ErrBadSnapshot) {
				t.Fatalf("Restore error %v wraps no ErrBadSnapshot", err)
			}
			after, perr := persisted(target)
			if perr != nil || !bytes.Equal(after, before) {
				t.Fatalf("a refused snapshot changed the state (%v)", perr)
			}
			return
		}
		again, err := persisted(target)
		if err != nil {
			t.Fatal(err)
		}
		other := New()
		if err := other.Restore(io.NopCloser(bytes.NewReader(again))); err != nil {
			t.Fatalf("a persisted restored snapshot does not restore: %v", err)
		}
		third, err := persisted(other)
		if err != nil || !bytes.Equal(third, again) {
			t.Fatalf("persist/restore is not stable (%v)", err)
		}
	})
}

// TestRestoreBoundsState: a snapshot whose entries hold more than the configuration
// store's limit is refused (Restore's memory is bounded as Apply's is).
func TestRestoreBoundsState(t *testing.T) {
	withLimits(t, MaxTombstones, 100)
	snap := func(n int) string {
		lines := []string{`{"format":2,"applied_index":9,"horizon":0}`}
		for i := 0; i < n; i++ {
			lines = append(lines, fmt.Sprintf(`{"entry":{"key":"k%02d","value":"eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4","version":%d}}`, i, i+1))
		}
		return seal(`{"trailer":{"cluster":false,"members":0,"entries":`+fmt.Sprint(n)+`,"tombstones":0,"sha256":"%s"}}`, lines...)
	}
	if err := New().Restore(io.NopCloser(bytes.NewReader([]byte(snap(3))))); err != nil {
		t.Fatalf("3 entries of 27 bytes: %v", err)
	}
	err := New().Restore(io.NopCloser(bytes.NewReader([]byte(snap(4)))))
	if !errors.Is(err, ErrBadSnapshot) {
		t.Fatalf("4 entries of 27 bytes over a 100-byte limit: %v", err)
	}
}
