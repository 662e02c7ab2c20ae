package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
)

// persist snapshots f and returns the persisted bytes.
func persist(t *testing.T, f *FSM) string {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	sink := &testSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	if !sink.closed || sink.cancelled {
		t.Fatalf("sink closed=%v cancelled=%v", sink.closed, sink.cancelled)
	}
	return sink.String()
}

func restore(f *FSM, data string) error {
	return f.Restore(io.NopCloser(strings.NewReader(data)))
}

// view is everything observable through the read side.
type view struct {
	Cluster *Cluster
	Members []Member
	Entries []Entry
	Applied uint64
}

func viewOf(f *FSM) view {
	return view{f.Cluster(), f.Members(), f.mustList(""), f.AppliedIndex()}
}

// bigFSM returns an FSM with a cluster, members and many entries, some with
// binary and maximum-size values.
func bigFSM(t *testing.T) *FSM {
	h := withCluster(t, 5)
	h.must(RemoveMember{CID: 3})
	for i := 0; i < 2000; i++ {
		v := make([]byte, i%300)
		for j := range v {
			v[j] = byte(i + j)
		}
		h.must(ConfigSet{Key: fmt.Sprintf("k/%04d", i), Value: v})
	}
	big := bytes.Repeat([]byte{0xff, 0x00, '\n', '"'}, MaxValueLen/4)
	h.must(ConfigSet{Key: "big/" + strings.Repeat(`"\`, (MaxKeyLen-4)/2), Value: big})
	h.must(ConfigSet{Key: "empty", Value: nil})
	return h.f
}

func TestSnapshotRoundTrip(t *testing.T) {
	src := bigFSM(t)
	data := persist(t, src)
	dst := New()
	var hooked uint64
	dst.SetOnApply(func(i uint64) { hooked = i })
	if err := restore(dst, data); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(viewOf(dst), viewOf(src)) {
		t.Fatalf("restored state differs")
	}
	if hooked != src.AppliedIndex() {
		t.Fatalf("hook saw %d, want %d", hooked, src.AppliedIndex())
	}
	// Snapshots of equal states are byte-identical.
	if again := persist(t, dst); again != data {
		t.Fatalf("re-persisted snapshot differs")
	}
	// The restored FSM keeps working: CIDs continue, versions continue.
	h := &harness{t: t, f: dst, idx: dst.AppliedIndex()}
	m := member(3)
	m.CID = 6
	h.must(AddMember{Member: m})
}

func TestSnapshotIsLineStream(t *testing.T) {
	h := withCluster(t, 2)
	h.must(ConfigSet{Key: "a", Value: []byte("x")})
	h.must(ConfigSet{Key: "b", Value: []byte("y")})
	h.must(ConfigDelete{Key: "b"})
	lines := strings.Split(strings.TrimSuffix(persist(t, h.f), "\n"), "\n")
	want := []string{`{"format":2,"applied_index":5,"horizon":0}`, `{"cluster":`, `{"member":{"cid":1`, `{"member":{"cid":2`,
		`{"entry":{"key":"a"`, `{"tombstone":{"key":"b","version":5}}`, `{"trailer":{"cluster":true,"members":2,"entries":1,"tombstones":1,`}
	if len(lines) != len(want) {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), len(want), strings.Join(lines, "\n"))
	}
	for i, p := range want {
		if !strings.HasPrefix(lines[i], p) {
			t.Errorf("line %d = %.60s, want prefix %s", i+1, lines[i], p)
		}
	}
}

func TestSnapshotIsolatedFromLaterApplies(t *testing.T) {
	h := withCluster(t, 2)
	h.must(ConfigSet{Key: "a", Value: []byte("old")})
	snap, err := h.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	h.must(ConfigSet{Key: "a", Value: []byte("new")})
	h.must(AddMember{Member: member(3)})
	h.must(SetJoinToken{})
	sink := &testSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	f := New()
	if err := restore(f, sink.String()); err != nil {
		t.Fatal(err)
	}
	e, _ := f.mustGet("a")
	if string(e.Value) != "old" || len(f.Members()) != 2 || f.Cluster().NextCID != 3 || len(f.Cluster().JoinTokenHash) != 32 {
		t.Fatalf("snapshot saw later applies: %+v", viewOf(f))
	}
	if f.AppliedIndex() != 3 {
		t.Fatalf("AppliedIndex = %d, want 3", f.AppliedIndex())
	}
}

func TestSnapshotEmptyFSM(t *testing.T) {
	data := persist(t, New())
	f := withCluster(t, 2).f
	if err := restore(f, data); err != nil {
		t.Fatal(err)
	}
	if v := viewOf(f); v.Cluster != nil || len(v.Members) != 0 || len(v.Entries) != 0 || v.Applied != 0 {
		t.Fatalf("restore of empty snapshot kept state: %+v", v)
	}
}

func TestPersistCancelsOnError(t *testing.T) {
	snap, _ := bigFSM(t).Snapshot()
	sink := &testSink{failAfter: 100 << 10}
	if err := snap.Persist(sink); err == nil {
		t.Fatal("Persist succeeded on a failing sink")
	}
	if !sink.cancelled || sink.closed {
		t.Fatalf("cancelled=%v closed=%v", sink.cancelled, sink.closed)
	}
}

func TestRestoreBadSnapshots(t *testing.T) {
	h := withCluster(t, 3)
	for i := 0; i < 20; i++ {
		h.must(ConfigSet{Key: fmt.Sprintf("k%d", i), Value: []byte{byte(i), 0, 1}})
	}
	good := persist(t, h.f)
	lines := strings.SplitAfter(good, "\n")
	lines = lines[:len(lines)-1] // the empty string after the last newline
	trailer := lines[len(lines)-1]
	body := strings.Join(lines[:len(lines)-1], "")

	flip := func(s string, at int) string {
		b := []byte(s)
		b[at] ^= 0x01
		return string(b)
	}
	tests := []struct {
		name string
		data string
		msg  string // in the error, if set
	}{
		{"empty", "", "empty"},
		{"header only", lines[0], "no trailer"},
		{"no trailer", body, "no trailer"},
		{"cut mid line", good[:len(good)/2], ""},
		{"cut final newline", good[:len(good)-1], "truncated"},
		{"one line dropped", strings.Join(append(append([]string{}, lines[:3]...), lines[4:]...), ""), "does not match"},
		{"flipped value bit", flip(good, strings.Index(good, `"k1"`)+30), ""},
		{"flipped hash", flip(good, len(good)-5), "does not match"},
		{"trailing data", good + lines[2], "after the trailer"},
		{"garbage", "not json\n", "bad header"},
		{"newer format", strings.Replace(good, `{"format":2,`, `{"format":3,`, 1), "snapshot format 3 unknown to this node (it reads formats 1-2)"},
		{"format 0", strings.Replace(good, `{"format":2,`, `{"format":0,`, 1), "snapshot format 0 unknown"},
		{"line too long", `{"format":1,"applied_index":1}` + "\n" + strings.Repeat("x", maxSnapshotLine+1) + "\n", "longer than"},
		{"two kinds", lines[0] + `{"cluster":{},"member":{}}` + "\n" + trailer, "2 kinds"},
		{"unknown record", lines[0] + `{"bogus":1}` + "\n" + trailer, "unknown field"},
	}
	// One FSM serves every case: each failed restore must leave it as it was, which the
	// next case checks again (building it per case cost 4 s under -race).
	f := bigFSM(t)
	before := viewOf(f)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := restore(f, tt.data)
			if !errors.Is(err, ErrBadSnapshot) {
				t.Fatalf("err = %v, want ErrBadSnapshot", err)
			}
			if tt.msg != "" && !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("err = %v, want it to mention %q", err, tt.msg)
			}
			if !reflect.DeepEqual(viewOf(f), before) {
				t.Fatalf("failed restore changed the state")
			}
		})
	}
}

// TestRestoreChecksRecords feeds records that hash correctly but break the
// state's invariants.
func TestRestoreChecksRecords(t *testing.T) {
	bad := []state{
		{members: map[uint64]Member{1: member(1)}, entries: map[string]slot{}},                                // members without cluster
		{cluster: &Cluster{NextCID: 2}, members: map[uint64]Member{2: member(2)}, entries: map[string]slot{}}, // unissued CID
		{members: map[uint64]Member{}, entries: map[string]slot{"a//b": heapSlot(1, []byte{})}},               // invalid key
		{members: map[uint64]Member{}, entries: map[string]slot{"a": heapSlot(1, make([]byte, MaxValueLen+1))}},
		{cluster: &Cluster{NextCID: 3}, members: map[uint64]Member{1: member(1), 2: func() Member {
			m := member(2)
			m.Name = member(1).Name
			return m
		}()}, entries: map[string]slot{}},
	}
	for i, st := range bad {
		var buf bytes.Buffer
		if err := (&fsmSnapshot{st: st, applied: 9}).write(&buf); err != nil {
			t.Fatal(err)
		}
		f := New()
		if err := restore(f, buf.String()); !errors.Is(err, ErrBadSnapshot) {
			t.Errorf("case %d: err = %v, want ErrBadSnapshot", i, err)
		}
		if f.AppliedIndex() != 0 {
			t.Errorf("case %d: state changed", i)
		}
	}
}

type errReader struct{ closed bool }

func (r *errReader) Read([]byte) (int, error) { return 0, errors.New("disk on fire") }
func (r *errReader) Close() error {
	r.closed = true
	return nil
}

func TestRestoreReadErrorAndClose(t *testing.T) {
	f := bigFSM(t)
	before := viewOf(f)
	r := &errReader{}
	if err := f.Restore(r); err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Fatalf("err = %v", err)
	}
	if !r.closed {
		t.Fatalf("Restore did not close its reader")
	}
	if !reflect.DeepEqual(viewOf(f), before) {
		t.Fatalf("failed restore changed the state")
	}
}

// TestSnapshotThroughRaftStore persists through a real raft snapshot store.
func TestSnapshotThroughRaftStore(t *testing.T) {
	src := bigFSM(t)
	store, err := raft.NewFileSnapshotStoreWithLogger(t.TempDir(), 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	sink, err := store.Create(raft.SnapshotVersionMax, src.AppliedIndex(), 1, raft.Configuration{}, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	snap, _ := src.Snapshot()
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	_, rc, err := store.Open(sink.ID())
	if err != nil {
		t.Fatal(err)
	}
	dst := New()
	if err := dst.Restore(rc); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(viewOf(dst), viewOf(src)) {
		t.Fatalf("restored state differs")
	}
}
