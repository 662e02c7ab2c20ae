package fsm

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
)

var update = flag.Bool("update", false, "rewrite the golden files of the current snapshot format in testdata")

// seal joins hand-written snapshot lines and appends the trailer, given as a
// format with one %s for the SHA-256 of the lines.
func seal(trailer string, lines ...string) string {
	body := strings.Join(lines, "\n") + "\n"
	sum := sha256.Sum256([]byte(body))
	return body + fmt.Sprintf(trailer, hex.EncodeToString(sum[:])) + "\n"
}

// fullView is everything observable, including the watch state.
type fullView struct {
	view
	Changes []Change
	Reset   bool
	Bytes   int64
	Tombs   string
	Horizon uint64
}

func fullViewOf(f *FSM) fullView {
	v := fullView{view: viewOf(f), Bytes: f.StateBytes()}
	v.Changes, v.Reset = f.mustChanges("", 0)
	v.Tombs, v.Horizon = tombsOf(f)
	return v
}

// tombstonedFSM returns an FSM, built with a tombstone limit of 2, that holds
// a cluster, entries, tombstones and a horizon above 0.
func tombstonedFSM(t *testing.T) *harness {
	withLimits(t, 2, MaxStateBytes)
	h := withCluster(t, 2) // 1, 2
	for _, c := range []Command{
		set("mail/a", "a"),           // 3
		set("mail/b", "b"),           // 4
		set("mail/c", "c"),           // 5
		set("spam/x", "x\x00\xff\n"), // 6
		del("mail/a"),                // 7
		del("mail/b"),                // 8
		set("mail/a", "a2"),          // 9: removes the tombstone of 7
		del("mail/c"),                // 10
		del("spam/x"),                // 11: drops mail/b@8
		set("mail/d", ""),            // 12
	} {
		h.must(c)
	}
	if tombs, hz := tombsOf(h.f); tombs != "mail/c@10,spam/x@11" || hz != 8 {
		t.Fatalf("setup: tombstones %q horizon %d", tombs, hz)
	}
	return h
}

func TestSnapshotRoundTripTombstones(t *testing.T) {
	h := tombstonedFSM(t)
	data := persist(t, h.f)
	dst := New()
	if err := restore(dst, data); err != nil {
		t.Fatal(err)
	}
	want := fullViewOf(h.f)
	if got := fullViewOf(dst); !reflect.DeepEqual(got, want) {
		t.Fatalf("restored state differs:\n got %+v\nwant %+v", got, want)
	}
	if !want.Reset || want.Horizon != 8 || want.Tombs != "mail/c@10,spam/x@11" {
		t.Fatalf("unexpected source state %+v", want)
	}
	if again := persist(t, dst); again != data {
		t.Fatalf("re-persisted snapshot differs:\n%s\n%s", again, data)
	}
	// Both go on the same way: the restored order drops the same tombstone.
	h2 := &harness{t: t, f: dst, idx: h.idx}
	for _, hh := range []*harness{h, h2} {
		hh.must(del("mail/d")) // 13: drops mail/c@10
	}
	if a, b := persist(t, h.f), persist(t, dst); a != b {
		t.Fatalf("snapshots differ after the same delete:\n%s\n%s", a, b)
	}
	if tombs, hz := tombsOf(dst); tombs != "spam/x@11,mail/d@13" || hz != 10 {
		t.Fatalf("after restore and delete: tombstones %q horizon %d", tombs, hz)
	}
	if cs, reset := dst.mustChanges("", 10); reset || renderChanges(cs) != "spam/x@11- mail/d@13-" {
		t.Fatalf("Changes from the horizon = %s reset=%v", renderChanges(cs), reset)
	}
}

// TestSnapshotGoldenFormat2 pins the current format: run with -update after a
// deliberate format change (and keep the old golden readable).
func TestSnapshotGoldenFormat2(t *testing.T) {
	got := persist(t, tombstonedFSM(t).f)
	path := filepath.Join("testdata", "snapshot-format2.golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Fatalf("snapshot differs from %s (run go test -update if the change is deliberate):\n%s", path, got)
	}
}

// TestRestoreFormat1Golden restores testdata/snapshot-format1.golden, written
// by the code of commit 47b3419 (before tombstones). It is a fixed artifact:
// -update does not rewrite it.
func TestRestoreFormat1Golden(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "snapshot-format1.golden"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(data), `{"format":1,"applied_index":13}`+"\n") {
		t.Fatalf("golden file is not a format 1 snapshot")
	}
	f := New()
	if err := restore(f, string(data)); err != nil {
		t.Fatal(err)
	}
	v := fullViewOf(f)
	if v.Applied != 13 || v.Cluster == nil || len(v.Members) != 2 || v.Tombs != "" || v.Horizon != 0 || v.Reset {
		t.Fatalf("restored %+v", v)
	}
	want := "mail/relay@5=smtp.example.com:25\n mail/bin@6=\x00\x01\x02\xff\n\" mail/empty@7= spam/score@9=6 " +
		"legacy/./dot@12=kept by format 1 legacy/..@13=dotdot"
	if got := renderChanges(v.Changes); got != want {
		t.Fatalf("Changes = %q\nwant      %q", got, want)
	}
	var size int64
	for _, e := range v.Entries {
		size += int64(len(e.Key) + len(e.Value))
	}
	if v.Bytes != size {
		t.Fatalf("StateBytes = %d, want %d", v.Bytes, size)
	}

	// Keys written before the ban on "." and ".." survive and can be deleted,
	// not written again.
	h := &harness{t: t, f: f, idx: 13}
	h.must(del("legacy/./dot"))
	wantErr(t, h.apply(set("legacy/./dot", "again")).Err, ErrInvalidKey)
	wantErr(t, h.apply(set("legacy/..", "again")).Err, ErrInvalidKey)
	if cs, reset := f.mustChanges("", 13); reset || renderChanges(cs) != "legacy/./dot@14-" {
		t.Fatalf("Changes = %s, reset %v", renderChanges(cs), reset)
	}

	// It is written back in the current format and reads the same.
	again := persist(t, f)
	if !strings.HasPrefix(again, fmt.Sprintf(`{"format":%d,`, SnapshotFormat)) {
		t.Fatalf("re-persisted as %.40s", again)
	}
	g := New()
	if err := restore(g, again); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(fullViewOf(g), fullViewOf(f)) {
		t.Fatalf("format 1 -> current -> restore changed the state")
	}
}

func TestRestoreHandWrittenSnapshots(t *testing.T) {
	const (
		tr1 = `{"trailer":{"cluster":false,"members":0,"entries":1,"sha256":"%s"}}`
		tr2 = `{"trailer":{"cluster":false,"members":0,"entries":1,"tombstones":1,"sha256":"%s"}}`
	)
	entry := `{"entry":{"key":"a","value":"eA==","version":3}}`
	tomb := `{"tombstone":{"key":"b","version":4}}`
	tests := []struct {
		name string
		data string
		err  string // "" restores
	}{
		{"format 1", seal(tr1, `{"format":1,"applied_index":5}`, entry), ""},
		{"format 2", seal(tr2, `{"format":2,"applied_index":5,"horizon":2}`, entry, tomb), ""},
		{"format 1 with a tombstone", seal(tr2, `{"format":1,"applied_index":5}`, entry, tomb), "tombstone record in a format 1 snapshot"},
		{"format 1 with a horizon", seal(tr1, `{"format":1,"applied_index":5,"horizon":2}`, entry), "horizon in a format 1"},
		{"tombstones out of order", seal(strings.Replace(tr2, `"tombstones":1`, `"tombstones":2`, 1), `{"format":2,"applied_index":9,"horizon":0}`, entry,
			`{"tombstone":{"key":"c","version":6}}`, `{"tombstone":{"key":"b","version":5}}`), "version 5 is not above the previous one, 6"},
		{"tombstone listed twice", seal(strings.Replace(tr2, `"tombstones":1`, `"tombstones":2`, 1), `{"format":2,"applied_index":9,"horizon":0}`, entry,
			tomb, `{"tombstone":{"key":"b","version":6}}`), "tombstone \"b\" listed twice"},
		{"tombstone before entry", seal(tr2, `{"format":2,"applied_index":5,"horizon":0}`, tomb, entry), "entry record after the tombstones"},
		{"trailer without tombstone count", seal(tr1, `{"format":2,"applied_index":5,"horizon":0}`, entry, tomb), "does not match"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := New()
			err := restore(f, tt.data)
			if tt.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				if e, ok := f.mustGet("a"); !ok || string(e.Value) != "x" || e.Version != 3 || f.AppliedIndex() != 5 || f.StateBytes() < 2 {
					t.Fatalf("restored %+v", fullViewOf(f))
				}
				return
			}
			if !errors.Is(err, ErrBadSnapshot) || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("err = %v, want ErrBadSnapshot mentioning %q", err, tt.err)
			}
			if f.AppliedIndex() != 0 {
				t.Fatalf("failed restore changed the state")
			}
		})
	}
}

// TestRestoreChecksTombstones feeds tombstone records that hash correctly but
// break the state's invariants.
func TestRestoreChecksTombstones(t *testing.T) {
	entries := func(kv ...string) map[string]slot {
		m := map[string]slot{}
		for _, k := range kv {
			m[k] = heapSlot(1, []byte{})
		}
		return m
	}
	tombs := func(horizon uint64, tbs ...tombstone) tombstones {
		t := tombstones{byKey: map[string]uint64{}, horizon: horizon}
		for _, tb := range tbs {
			t.byKey[tb.Key] = tb.Version
			t.order = append(t.order, tb)
		}
		return t
	}
	tests := []struct {
		name string
		st   state
		err  string
	}{
		{"tombstone of a live key", state{entries: entries("a"), tombs: tombs(0, tombstone{"a", 2})}, "for a live entry"},
		{"invalid key", state{tombs: tombs(0, tombstone{"a//b", 6})}, "invalid key"},
		{"version 0", state{tombs: tombs(0, tombstone{"a", 0})}, "version 0 is not above the previous one, 0"},
		{"same version", state{tombs: tombs(0, tombstone{"a", 6}, tombstone{"b", 6})}, "version 6 is not above the previous one, 6"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf strings.Builder
			if err := (&fsmSnapshot{st: tt.st, applied: 9}).write(&buf); err != nil {
				t.Fatal(err)
			}
			f := New()
			err := restore(f, buf.String())
			if !errors.Is(err, ErrBadSnapshot) || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("err = %v, want ErrBadSnapshot mentioning %q\n%s", err, tt.err, buf.String())
			}
			if f.AppliedIndex() != 0 {
				t.Fatalf("failed restore changed the state")
			}
		})
	}
}

// randomLog returns n encoded config commands on a few keys, seeded.
func randomLog(t *testing.T, seed uint64, n int) [][]byte {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	var log [][]byte
	for i := 0; i < n; i++ {
		key := fmt.Sprintf("k/%d", rng.IntN(40))
		var ifv *uint64
		if rng.IntN(4) == 0 {
			ifv = u64(uint64(rng.IntN(i + 2)))
		}
		var c Command
		if rng.IntN(3) == 0 {
			c = ConfigDelete{Key: key, IfVersion: ifv}
		} else {
			c = ConfigSet{Key: key, Value: make([]byte, rng.IntN(64)), IfVersion: ifv}
		}
		b, err := Encode(c)
		if err != nil {
			t.Fatal(err)
		}
		log = append(log, b)
	}
	return log
}

// TestDeterminism feeds the same log to two FSMs, and to a third restored
// from a snapshot taken midway: results and final snapshots are identical.
func TestDeterminism(t *testing.T) {
	withLimits(t, 7, 900) // deletions overflow, and some sets hit the size bound
	const n = 4000
	log := randomLog(t, 42, n)
	a, b := New(), New()
	var c *FSM
	var tooLarge int
	for i, data := range log {
		l := &raft.Log{Type: raft.LogCommand, Index: uint64(i + 1), Data: data}
		ra := a.Apply(l).(*Result)
		rb := b.Apply(l).(*Result)
		if i == n/2 {
			c = New()
			if err := restore(c, persist(t, b)); err != nil {
				t.Fatal(err)
			}
		}
		if c != nil && i > n/2 {
			rc := c.Apply(l).(*Result)
			if fmt.Sprint(ra) != fmt.Sprint(rc) {
				t.Fatalf("index %d: results differ: %v vs %v (restored)", l.Index, ra, rc)
			}
		}
		if fmt.Sprint(ra) != fmt.Sprint(rb) {
			t.Fatalf("index %d: results differ: %v vs %v", l.Index, ra, rb)
		}
		if errors.Is(ra.Err, ErrTooLarge) {
			tooLarge++
		}
	}
	_, hz := tombsOf(a)
	if _, reset := a.mustChanges("", 0); tooLarge == 0 || hz == 0 || !reset {
		t.Fatalf("the log did not exercise the limits: %d ErrTooLarge, horizon %d", tooLarge, hz)
	}
	sa, sb, sc := persist(t, a), persist(t, b), persist(t, c)
	if sa != sb || sa != sc {
		t.Fatalf("snapshots differ")
	}
	for _, f := range []*FSM{a, b, c} {
		checkInvariants(t, f)
	}
}
