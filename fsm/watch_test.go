package fsm

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
)

// withLimits lowers the tombstone and state size limits for one test. Tests of
// this package do not run in parallel, so the package variables are safe.
func withLimits(t *testing.T, tombs int, bytes int64) {
	t.Helper()
	oldT, oldB := tombstoneLimit, stateBytesLimit
	tombstoneLimit, stateBytesLimit = tombs, bytes
	t.Cleanup(func() { tombstoneLimit, stateBytesLimit = oldT, oldB })
}

// tombsOf renders f's tombstones by version as "key@version,...", and its
// horizon.
func tombsOf(f *FSM) (string, uint64) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var out []string
	for _, tb := range f.st.tombs.sorted() {
		out = append(out, fmt.Sprintf("%s@%d", tb.Key, tb.Version))
	}
	return strings.Join(out, ","), f.st.tombs.horizon
}

// checkInvariants recomputes what Apply keeps incrementally.
func checkInvariants(t *testing.T, f *FSM) {
	t.Helper()
	f.mu.RLock()
	defer f.mu.RUnlock()
	st := &f.st
	var size, spilled, inHeap int64
	for k, e := range st.entries {
		size += int64(len(k)) + e.size()
		if !e.spilled() {
			inHeap += e.size()
		}
		if _, ok := st.tombs.byKey[k]; ok {
			t.Errorf("key %q is both live and tombstoned", k)
		}
		if e.spilled() {
			spilled += int64(e.n())
			if st.seg == nil || e.off()+int64(e.n()) > st.seg.end.Load() {
				t.Errorf("key %q: spilled at %d+%d, past its segment", k, e.off(), e.n())
			}
		}
	}
	if spilled != st.spilled || inHeap != st.inHeap {
		t.Errorf("spilled bytes %d and in the heap %d, the state counts %d and %d", spilled, inHeap, st.spilled, st.inHeap)
	}
	last := st.tombs.horizon
	for _, tb := range st.tombs.sorted() {
		size += int64(len(tb.Key))
		if tb.Version <= last {
			t.Errorf("tombstone %s@%d not above %d (horizon or previous)", tb.Key, tb.Version, last)
		}
		last = tb.Version
	}
	if n := len(st.tombs.sorted()); n != len(st.tombs.byKey) {
		t.Errorf("%d tombstones in order, %d by key", n, len(st.tombs.byKey))
	}
	if len(st.tombs.byKey) > tombstoneLimit {
		t.Errorf("%d tombstones, limit %d", len(st.tombs.byKey), tombstoneLimit)
	}
	if len(st.tombs.order) > 2*len(st.tombs.byKey)+64 {
		t.Errorf("tombstone order holds %d items for %d tombstones", len(st.tombs.order), len(st.tombs.byKey))
	}
	if size != st.bytes {
		t.Errorf("state bytes = %d, recomputed %d", st.bytes, size)
	}
}

func set(k, v string) ConfigSet { return ConfigSet{Key: k, Value: []byte(v)} }
func del(k string) ConfigDelete { return ConfigDelete{Key: k} }

func TestTombstones(t *testing.T) {
	tests := []struct {
		name  string
		cmds  []Command // applied at indexes 1, 2, ...; errors are ignored
		tombs string
	}{
		{"delete leaves a tombstone", []Command{set("a", "1"), del("a")}, "a@2"},
		{"set removes it", []Command{set("a", "1"), del("a"), set("a", "3")}, ""},
		{"CAS create removes it", []Command{set("a", "1"), del("a"), ConfigSet{Key: "a", IfVersion: u64(0)}}, ""},
		{"delete again", []Command{set("a", "1"), del("a"), set("a", "3"), del("a")}, "a@4"},
		{"by version, not key", []Command{set("a", "1"), set("b", "2"), set("c", "3"), del("c"), del("a")}, "c@4,a@5"},
		{"failed delete leaves none", []Command{del("a"), set("a", "2"), ConfigDelete{Key: "a", IfVersion: u64(9)}}, ""},
		{"failed set keeps it", []Command{set("a", "1"), del("a"), ConfigSet{Key: "a", IfVersion: u64(1)}, set("a//b", "")}, "a@2"},
		{"other keys untouched", []Command{set("a", "1"), set("b", "2"), del("a"), del("b"), set("a", "5")}, "b@4"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			for _, c := range tt.cmds {
				h.apply(c)
			}
			if got, hz := tombsOf(h.f); got != tt.tombs || hz != 0 {
				t.Fatalf("tombstones = %q horizon %d, want %q horizon 0", got, hz, tt.tombs)
			}
			checkInvariants(t, h.f)
		})
	}
}

// renderChanges renders changes as "key@version=value" or "key@version-".
func renderChanges(cs []Change) string {
	var out []string
	for _, c := range cs {
		if c.Deleted {
			if c.Value != nil {
				return fmt.Sprintf("deletion %s has a value", c.Key)
			}
			out = append(out, fmt.Sprintf("%s@%d-", c.Key, c.Version))
		} else {
			if c.Value == nil {
				return fmt.Sprintf("entry %s has a nil value", c.Key)
			}
			out = append(out, fmt.Sprintf("%s@%d=%s", c.Key, c.Version, c.Value))
		}
	}
	return strings.Join(out, " ")
}

func TestChanges(t *testing.T) {
	h := newHarness(t)
	for _, c := range []Command{
		set("mail/a", "1"),  // 1
		set("mail/b", "2"),  // 2
		set("spam/x", "3"),  // 3
		set("mail/a", "4"),  // 4: coalesced with 1
		del("mail/b"),       // 5
		set("mailx", "6"),   // 6
		del("spam/x"),       // 7
		set("spam/x", "8"),  // 8: replaces the tombstone of 7
		createCmd(),         // 9: not a config change
		set("mail/c", "10"), // 10
		del("mail/c"),       // 11
	} {
		h.must(c)
	}
	tests := []struct {
		prefix string
		from   uint64
		want   string
	}{
		{"", 0, "mail/a@4=4 mail/b@5- mailx@6=6 spam/x@8=8 mail/c@11-"},
		{"mail/", 0, "mail/a@4=4 mail/b@5- mail/c@11-"},
		{"mail", 0, "mail/a@4=4 mail/b@5- mailx@6=6 mail/c@11-"},
		{"spam/", 0, "spam/x@8=8"},
		{"mail/a", 0, "mail/a@4=4"},
		{"none", 0, ""},
		{"", 3, "mail/a@4=4 mail/b@5- mailx@6=6 spam/x@8=8 mail/c@11-"},
		{"", 4, "mail/b@5- mailx@6=6 spam/x@8=8 mail/c@11-"},
		{"", 5, "mailx@6=6 spam/x@8=8 mail/c@11-"},
		{"", 7, "spam/x@8=8 mail/c@11-"},
		{"", 9, "mail/c@11-"},
		{"mail/", 6, "mail/c@11-"},
		{"spam/", 8, ""},
		{"", 11, ""},
		{"", 99, ""},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%q from %d", tt.prefix, tt.from), func(t *testing.T) {
			cs, reset := h.f.mustChanges(tt.prefix, tt.from)
			if reset {
				t.Fatalf("reset with horizon 0")
			}
			if cs == nil {
				t.Fatalf("Changes returned nil, want empty")
			}
			if got := renderChanges(cs); got != tt.want {
				t.Fatalf("Changes = %s\nwant      %s", got, tt.want)
			}
		})
	}
	// Values are copies.
	cs, _ := h.f.mustChanges("mail/a", 0)
	cs[0].Value[0] = 'X'
	if e, _ := h.f.mustGet("mail/a"); string(e.Value) != "4" {
		t.Fatalf("state changed through a Changes value: %q", e.Value)
	}
}

func TestTombstoneOverflowAndReset(t *testing.T) {
	withLimits(t, 3, MaxStateBytes)
	h := newHarness(t)
	for i := 0; i < 6; i++ {
		h.must(set(fmt.Sprintf("k%d", i), "v")) // k0@1 .. k5@6
	}
	for i := 0; i < 5; i++ {
		h.must(del(fmt.Sprintf("k%d", i))) // k0@7 .. k4@11
		checkInvariants(t, h.f)
	}
	if tombs, hz := tombsOf(h.f); tombs != "k2@9,k3@10,k4@11" || hz != 8 {
		t.Fatalf("tombstones %q horizon %d, want k2@9,k3@10,k4@11 horizon 8", tombs, hz)
	}
	tests := []struct {
		prefix string
		from   uint64
		want   string
		reset  bool
	}{
		{"", 0, "k5@6=v", true},
		{"", 7, "k5@6=v", true},
		{"none", 7, "", true},
		{"", 8, "k2@9- k3@10- k4@11-", false},
		{"", 10, "k4@11-", false},
		{"", 11, "", false},
	}
	for _, tt := range tests {
		cs, reset := h.f.mustChanges(tt.prefix, tt.from)
		if got := renderChanges(cs); got != tt.want || reset != tt.reset {
			t.Errorf("Changes(%q, %d) = %s reset=%v, want %s reset=%v", tt.prefix, tt.from, got, reset, tt.want, tt.reset)
		}
	}

	// A re-set frees a slot: no drop on the next delete.
	h.must(set("k2", "w")) // 12
	h.must(del("k5"))      // 13
	if tombs, hz := tombsOf(h.f); tombs != "k3@10,k4@11,k5@13" || hz != 8 {
		t.Fatalf("tombstones %q horizon %d, want k3@10,k4@11,k5@13 horizon 8", tombs, hz)
	}
	h.must(del("k2")) // 14: drops k3@10
	if tombs, hz := tombsOf(h.f); tombs != "k4@11,k5@13,k2@14" || hz != 10 {
		t.Fatalf("tombstones %q horizon %d, want k4@11,k5@13,k2@14 horizon 10", tombs, hz)
	}
	if cs, reset := h.f.mustChanges("", 0); !reset || len(cs) != 0 {
		t.Fatalf("Changes after deleting everything = %s reset=%v, want nothing, reset", renderChanges(cs), reset)
	}
	checkInvariants(t, h.f)
}

// TestTombstoneChurn sets and deletes a few keys many times: the queue of
// stale tombstones stays bounded and the oldest live one is always dropped.
func TestTombstoneChurn(t *testing.T) {
	withLimits(t, 4, MaxStateBytes)
	h := newHarness(t)
	lastDelete := map[string]uint64{}
	for i := 0; i < 3000; i++ {
		k := fmt.Sprintf("k%d", (i*7)%9)
		if _, ok := h.f.mustGet(k); ok {
			h.must(del(k))
			lastDelete[k] = h.idx
		} else {
			h.must(set(k, strings.Repeat("x", i%5)))
		}
	}
	checkInvariants(t, h.f)
	// The kept tombstones are the 4 newest last deletions of the keys now
	// absent, and the horizon is below them.
	var want []uint64
	for k, v := range lastDelete {
		if _, ok := h.f.mustGet(k); !ok {
			want = append(want, v)
		}
	}
	slices.Sort(want)
	if len(want) > 4 {
		want = want[len(want)-4:]
	}
	h.f.mu.RLock()
	var got []uint64
	for _, tb := range h.f.st.tombs.sorted() {
		got = append(got, tb.Version)
	}
	hz := h.f.st.tombs.horizon
	h.f.mu.RUnlock()
	if !slices.Equal(got, want) || hz == 0 || hz >= got[0] {
		t.Fatalf("tombstone versions %v horizon %d, want %v under a horizon below them", got, hz, want)
	}
}

func TestMaxTombstones(t *testing.T) {
	h := newHarness(t)
	for i := 0; i <= MaxTombstones; i++ {
		h.must(set(fmt.Sprintf("k/%05d", i), ""))
	}
	first := h.idx + 1
	for i := 0; i <= MaxTombstones; i++ {
		h.must(del(fmt.Sprintf("k/%05d", i)))
	}
	h.f.mu.RLock()
	n, hz := len(h.f.st.tombs.byKey), h.f.st.tombs.horizon
	h.f.mu.RUnlock()
	if n != MaxTombstones || hz != first {
		t.Fatalf("%d tombstones, horizon %d; want %d, %d", n, hz, MaxTombstones, first)
	}
	if _, reset := h.f.mustChanges("", first); reset {
		t.Fatalf("reset from the horizon")
	}
	if _, reset := h.f.mustChanges("", first-1); !reset {
		t.Fatalf("no reset from below the horizon")
	}
	checkInvariants(t, h.f)
}

func TestResetForgetsTombstones(t *testing.T) {
	withLimits(t, 1, MaxStateBytes)
	h := newHarness(t)
	h.must(set("a", "1"))
	h.must(set("b", "1"))
	h.must(del("a"))
	h.must(del("b"))
	h.f.Reset()
	if cs, reset := h.f.mustChanges("", 0); len(cs) != 0 || reset || h.f.StateBytes() != 0 {
		t.Fatalf("after Reset: changes %s reset %v bytes %d", renderChanges(cs), reset, h.f.StateBytes())
	}
	if tombs, hz := tombsOf(h.f); tombs != "" || hz != 0 {
		t.Fatalf("after Reset: tombstones %q horizon %d", tombs, hz)
	}
}

// TestChangesMatchesList: with no deletions, Changes from 0 is List in
// version order.
func TestChangesMatchesList(t *testing.T) {
	f := bigFSM(t)
	cs, reset := f.mustChanges("k/", 0)
	list := f.mustList("k/")
	if reset || len(cs) != len(list) {
		t.Fatalf("%d changes (reset %v), %d entries", len(cs), reset, len(list))
	}
	byKey := map[string]Entry{}
	for _, e := range list {
		byKey[e.Key] = e
	}
	for i, c := range cs {
		e := byKey[c.Key]
		if i > 0 && c.Version <= cs[i-1].Version {
			t.Fatalf("changes not in version order at %d", i)
		}
		if c.Deleted || c.Version != e.Version || !reflect.DeepEqual(c.Value, e.Value) {
			t.Fatalf("change %+v, entry %+v", c, e)
		}
	}
}

// TestChangesConcurrentWithApply runs readers against Apply (for -race).
func TestChangesConcurrentWithApply(t *testing.T) {
	withLimits(t, 10, MaxStateBytes)
	h := newHarness(t)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 2000; i++ {
			k := fmt.Sprintf("k%d", i%50)
			if i%3 == 2 {
				h.f.Apply(encodeLog(t, uint64(i+1), del(k)))
			} else {
				h.f.Apply(encodeLog(t, uint64(i+1), set(k, "v")))
			}
		}
	}()
	var from uint64
	for running := true; running; {
		select {
		case <-done:
			running = false
		default:
		}
		idx := h.f.AppliedIndex()
		cs, reset := h.f.mustChanges("k", from)
		for i := 1; i < len(cs); i++ {
			if cs[i].Version <= cs[i-1].Version {
				t.Fatalf("changes out of order")
			}
		}
		if !reset && len(cs) > 0 {
			from = max(from, idx, cs[len(cs)-1].Version)
		}
		_ = h.f.StateBytes()
		if snap, err := h.f.Snapshot(); err == nil {
			_ = snap.Persist(&testSink{})
		}
	}
}

func encodeLog(t *testing.T, idx uint64, c Command) *raft.Log {
	b, err := Encode(c)
	if err != nil {
		t.Error(err)
	}
	return &raft.Log{Type: raft.LogCommand, Index: idx, Data: b}
}

// BenchmarkChanges is one long-poll round over 50k entries and the maximum
// of tombstones, with one recent change.
func BenchmarkChanges(b *testing.B) {
	f := New()
	idx := uint64(0)
	apply := func(c Command) {
		data, err := Encode(c)
		if err != nil {
			b.Fatal(err)
		}
		idx++
		f.Apply(&raft.Log{Type: raft.LogCommand, Index: idx, Data: data})
	}
	for i := 0; i < 50000+MaxTombstones; i++ {
		apply(set(fmt.Sprintf("mail/%06d", i), strings.Repeat("v", 200)))
	}
	for i := 0; i < MaxTombstones; i++ {
		apply(del(fmt.Sprintf("mail/%06d", i)))
	}
	apply(set("mail/new", "x"))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if cs, _ := f.mustChanges("mail/", idx-1); len(cs) != 1 {
			b.Fatalf("%d changes", len(cs))
		}
	}
}
