package fsm

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// testSink is a raft.SnapshotSink backed by a bytes.Buffer.
type testSink struct {
	bytes.Buffer
	closed, cancelled bool
	failAfter         int // >0: Write fails once this many bytes were written
}

func (s *testSink) ID() string { return "test" }
func (s *testSink) Close() error {
	s.closed = true
	return nil
}
func (s *testSink) Cancel() error {
	s.cancelled = true
	return nil
}
func (s *testSink) Write(p []byte) (int, error) {
	if s.failAfter > 0 && s.Len()+len(p) > s.failAfter {
		return 0, errors.New("disk full")
	}
	return s.Buffer.Write(p)
}

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func u64(v uint64) *uint64 { return &v }

func tokenHash(tok string) []byte {
	h := sha256.Sum256([]byte(tok))
	return h[:]
}

// member returns a valid member with the given CID.
func member(cid uint64) Member {
	return Member{
		CID:         cid,
		Name:        fmt.Sprintf("pmg%d", cid),
		IP:          fmt.Sprintf("127.0.0.%d", cid),
		Port:        8006,
		Fingerprint: fmt.Sprintf("AA:BB:%02X", cid),
		Suffrage:    Voter,
		JoinedAt:    t0.Add(time.Duration(cid) * time.Minute),
		Epoch:       1,
	}
}

func createCmd() CreateCluster {
	return CreateCluster{
		ClusterID:     "c-1234",
		CreatedAt:     t0,
		CACertPEM:     []byte("-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n"),
		CAKeyPEM:      []byte("-----BEGIN PRIVATE KEY-----\ny\n-----END PRIVATE KEY-----\n"),
		JoinTokenSalt: []byte("salt"),
		JoinTokenHash: tokenHash("secret"),
		Founder:       member(1),
	}
}

// harness applies commands to an FSM at increasing log indexes.
type harness struct {
	t   *testing.T
	f   *FSM
	idx uint64
}

// newHarness applies to an FSM that spills every value but the empty one (SpillTo, with
// the threshold lowered), so that every test of the apply rules also runs the spilled
// slots; newHeapHarness keeps them in the heap.
func newHarness(t *testing.T) *harness {
	t.Helper()
	return &harness{t: t, f: spillingFSM(t)}
}

func newHeapHarness(t *testing.T) *harness {
	return &harness{t: t, f: New()}
}

// spillingFSM returns a new FSM that spills every non-empty value to a directory of the
// test, and fails the test if a value cannot be written there. Its files are removed at
// the test's end, once the FSM is closed.
func spillingFSM(t testing.TB) *FSM {
	t.Helper()
	f := New()
	if err := f.SpillTo(t.TempDir(), func(err error) { t.Errorf("spill: %v", err) }); err != nil {
		t.Fatal(err)
	}
	f.sp.min = 1
	t.Cleanup(f.Close)
	return f
}

// apply encodes and applies c and returns the result.
func (h *harness) apply(c Command) *Result {
	h.t.Helper()
	b, err := Encode(c)
	if err != nil {
		h.t.Fatalf("Encode(%#v): %v", c, err)
	}
	return h.applyRaw(b)
}

func (h *harness) applyRaw(b []byte) *Result {
	h.t.Helper()
	h.idx++
	out := h.f.Apply(&raft.Log{Type: raft.LogCommand, Index: h.idx, Data: b})
	res, ok := out.(*Result)
	if !ok || res == nil {
		h.t.Fatalf("Apply returned %#v, want *Result", out)
	}
	if res.Index != h.idx {
		h.t.Fatalf("Result.Index = %d, want %d", res.Index, h.idx)
	}
	return res
}

// must applies c and fails the test on error.
func (h *harness) must(c Command) *Result {
	h.t.Helper()
	res := h.apply(c)
	if res.Err != nil {
		h.t.Fatalf("apply %T: %v", c, res.Err)
	}
	return res
}

// withCluster returns a harness with a cluster of members 1..n.
func withCluster(t *testing.T, n int) *harness {
	h := newHarness(t)
	h.must(createCmd())
	for cid := uint64(2); cid <= uint64(n); cid++ {
		h.must(AddMember{Member: member(cid)})
	}
	return h
}

func wantErr(t *testing.T, got, want error) {
	t.Helper()
	if want == nil {
		if got != nil {
			t.Fatalf("err = %v, want nil", got)
		}
		return
	}
	if !errors.Is(got, want) {
		t.Fatalf("err = %v, want %v", got, want)
	}
}

// mustGet is Get for tests, which panic on a read error.
func (f *FSM) mustGet(key string) (Entry, bool) {
	e, ok, err := f.Get(key)
	if err != nil {
		panic(err)
	}
	return e, ok
}

// mustList is List for tests.
func (f *FSM) mustList(prefix string) []Entry {
	l, err := f.List(prefix)
	if err != nil {
		panic(err)
	}
	return l
}

// mustChanges is Changes for tests.
func (f *FSM) mustChanges(prefix string, from uint64) ([]Change, bool) {
	cs, reset, err := f.Changes(prefix, from)
	if err != nil {
		panic(err)
	}
	return cs, reset
}

// viewEntries reads a View whole (copying the values) and closes it.
func viewEntries(t testing.TB, v *View) []Entry {
	t.Helper()
	defer v.Close()
	var out []Entry
	for i := range v.Len() {
		e, err := v.At(i)
		if err != nil {
			t.Fatal(err)
		}
		e.Value = bytes.Clone(e.Value)
		out = append(out, e)
	}
	return out
}
