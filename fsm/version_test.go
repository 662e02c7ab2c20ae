package fsm

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
)

func TestSetClusterVersion(t *testing.T) {
	h := newHarness(t)
	wantErr(t, h.apply(SetClusterVersion{Version: 2}).Err, ErrNoCluster)
	h.must(createCmd())
	if v := h.f.ClusterVersion(); v != LevelRelease010 {
		t.Fatalf("cluster version before any record = %d, want %d", v, LevelRelease010)
	}
	h.must(SetClusterVersion{Version: LevelClusterVersion})
	if v := h.f.ClusterVersion(); v != LevelClusterVersion {
		t.Fatalf("cluster version = %d", v)
	}
	h.must(SetClusterVersion{Version: LevelClusterVersion}) // idempotent
	// Never down.
	wantErr(t, h.apply(SetClusterVersion{Version: 1}).Err, ErrBadCommand)
	wantErr(t, h.apply(SetClusterVersion{Version: 0}).Err, ErrBadCommand)
	if v := h.f.ClusterVersion(); v != LevelClusterVersion {
		t.Fatalf("refused commands changed the cluster version to %d", v)
	}
	if h.f.Halted() != nil {
		t.Fatalf("halted: %v", h.f.Halted())
	}
	// Above this build's level: it stops applying, naming both levels.
	before := h.f.AppliedIndex()
	res := h.apply(SetClusterVersion{Version: MaxLevel + 1})
	if !errors.Is(res.Err, ErrHalted) || !errors.Is(res.Err, ErrUnknownCommand) ||
		!strings.Contains(res.Err.Error(), "upgrade pmgclusterd") {
		t.Fatalf("cluster version above the build's level: %v", res.Err)
	}
	if h.f.AppliedIndex() != before || h.f.ClusterVersion() != LevelClusterVersion {
		t.Fatalf("the halting entry was applied: index %d (was %d), version %d", h.f.AppliedIndex(), before, h.f.ClusterVersion())
	}
}

// TestHaltOnUnknownCommand: at an entry it does not know, the FSM stops applying (it
// never skips it and goes on with a state the other members do not have), says so once
// through the hook, refuses to snapshot, and a Restore of a good snapshot ends the halt.
func TestHaltOnUnknownCommand(t *testing.T) {
	h := withCluster(t, 2)
	h.must(ConfigSet{Key: "a", Value: []byte("1")})
	good, err := h.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink testSink
	if err := good.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	var halts []error
	applied := 0
	h.f.SetOnHalt(func(err error) { halts = append(halts, err) })
	h.f.SetOnApply(func(uint64) { applied++ })

	at := h.f.AppliedIndex()
	res := h.applyRaw([]byte{EncodingVersion, 200, '{', '}'})
	if !errors.Is(res.Err, ErrHalted) || !errors.Is(res.Err, ErrUnknownCommand) {
		t.Fatalf("unknown command: %v", res.Err)
	}
	if len(halts) != 1 || !errors.Is(halts[0], ErrHalted) {
		t.Fatalf("halt hook calls: %v", halts)
	}
	// Everything after it is refused, nothing changes, the index stays.
	res = h.apply(ConfigSet{Key: "b", Value: []byte("2")})
	if !errors.Is(res.Err, ErrHalted) {
		t.Fatalf("entry after the halt: %v", res.Err)
	}
	if out := h.f.Apply(&raft.Log{Type: raft.LogNoop, Index: h.idx + 1}); out != nil {
		t.Fatalf("noop after the halt: %#v", out)
	}
	if _, ok := h.f.mustGet("b"); ok {
		t.Fatal("an entry after the halt was applied")
	}
	if h.f.AppliedIndex() != at || applied != 0 {
		t.Fatalf("applied index %d (want %d), %d apply hooks", h.f.AppliedIndex(), at, applied)
	}
	if len(halts) != 1 {
		t.Fatalf("halt hook called %d times", len(halts))
	}
	if !errors.Is(h.f.Halted(), ErrHalted) || !strings.Contains(h.f.Halted().Error(), "type 200") {
		t.Fatalf("Halted() = %v", h.f.Halted())
	}
	if _, err := h.f.Snapshot(); !errors.Is(err, ErrHalted) {
		t.Fatalf("Snapshot while halted: %v", err)
	}
	if err := h.f.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if h.f.Halted() != nil {
		t.Fatalf("still halted after Restore: %v", h.f.Halted())
	}
}

// TestSnapshotClusterVersion: a cluster that never recorded a version writes its cluster
// record as release 0.1.0 did (no version field); a recorded one survives a round trip.
func TestSnapshotClusterVersion(t *testing.T) {
	h := withCluster(t, 1)
	snap := func(f *FSM) []byte {
		s, err := f.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		var sink testSink
		if err := s.Persist(&sink); err != nil {
			t.Fatal(err)
		}
		return sink.Bytes()
	}
	if b := snap(h.f); bytes.Contains(b, []byte(`"version"`)) {
		t.Fatalf("snapshot without a cluster version carries one:\n%s", b)
	}
	h.must(SetClusterVersion{Version: LevelClusterVersion})
	b := snap(h.f)
	f := New()
	if err := f.Restore(io.NopCloser(bytes.NewReader(b))); err != nil {
		t.Fatal(err)
	}
	if v := f.ClusterVersion(); v != LevelClusterVersion {
		t.Fatalf("restored cluster version %d", v)
	}
}
