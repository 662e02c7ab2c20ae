package mailstore

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"sync/atomic"
	"testing"
	"time"
)

func TestAcceptDurableAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	var cid atomic.Uint64
	cid.Store(3)
	s := openStore(t, dir, &cid, nil)
	var metas []Meta
	var raws [][]byte
	for i := 0; i < 5; i++ {
		raw := message("hello", 1000*i)
		raws = append(raws, raw)
		metas = append(metas, accept(t, s, raw))
	}
	if metas[0].ID != "3-1" || metas[4].ID != "3-5" || !metas[0].HaveBody {
		t.Fatalf("ids: %+v", metas)
	}
	// A crash: copy the files of the open store, as a kill -9 leaves them.
	crash := t.TempDir()
	copyTree(t, dir, crash)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if _, err := s.Get("3-1"); !errors.Is(err, ErrClosed) {
		t.Fatalf("get after close: %v", err)
	}
	for _, d := range []string{dir, crash} {
		r := openStore(t, d, &cid, nil)
		for i, m := range metas {
			got, err := r.Get(m.ID)
			if err != nil || !reflect.DeepEqual(got, m) {
				t.Fatalf("%s: get %s = %+v, %v; want %+v", d, m.ID, got, err, m)
			}
			if b := readBody(t, r, m.ID); !bytes.Equal(b, raws[i]) {
				t.Fatalf("%s: body %s differs", d, m.ID)
			}
			if err := r.Verify(m.ID); err != nil {
				t.Fatalf("verify: %v", err)
			}
		}
		if h := r.Heads(); h[3] != 5 {
			t.Fatalf("heads %v", h)
		}
		if n, _ := r.Stats(); n != 5 {
			t.Fatalf("stats %d", n)
		}
		if m := accept(t, r, []byte("x")); m.ID != "3-6" {
			t.Fatalf("next id %s", m.ID)
		}
	}
}

func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.Walk(src, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if info.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o750)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestSubjectParsing(t *testing.T) {
	cases := []struct{ name, raw, want string }{
		{"plain", "From: a\r\nSubject: Hello world\r\n\r\nbody", "Hello world"},
		{"lf only", "Subject: lf\n\nbody\n", "lf"},
		{"encoded", "Subject: =?UTF-8?B?R3LDvMOfZQ==?=\r\n\r\n", "Grüße"},
		{"folded", "Subject: one\r\n two\r\nX: y\r\n\r\n", "one two"},
		{"none", "From: a\r\n\r\nSubject: not a header\r\n", ""},
		{"no body", "Subject: only header\r\n", "only header"},
		{"malformed", "garbage line\r\nSubject: still found\r\n\r\n", "still found"},
		{"empty", "", ""},
	}
	s := newStore(t, 1)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if m := accept(t, s, []byte(c.raw)); m.Subject != c.want {
				t.Fatalf("subject %q, want %q", m.Subject, c.want)
			}
		})
	}
}

func TestPerOriginSequence(t *testing.T) {
	var cid atomic.Uint64
	cid.Store(1)
	s := openStore(t, t.TempDir(), &cid, nil)
	a := accept(t, s, []byte("a"))
	b := accept(t, s, []byte("b"))
	if _, err := s.SetState(a.ID, StateReleased); err != nil {
		t.Fatal(err)
	}
	cid.Store(7) // the node got another CID
	c := accept(t, s, []byte("c"))
	if a.ID != "1-1" || b.ID != "1-2" || c.ID != "7-1" {
		t.Fatalf("ids %s %s %s", a.ID, b.ID, c.ID)
	}
	evs, err := s.EventsSince(nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range evs {
		got = append(got, MakeID(e.Origin, e.Seq)+":"+e.Kind)
	}
	want := []string{"1-1:new", "1-2:new", "1-3:state", "7-1:new"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("events %v, want %v", got, want)
	}
	if !reflect.DeepEqual(s.Heads(), Cursors{1: 3, 7: 1}) {
		t.Fatalf("heads %v", s.Heads())
	}
}

func TestApplyEventIdempotentAndGap(t *testing.T) {
	a, b := newStore(t, 1), newStore(t, 2)
	m1 := accept(t, a, []byte("one"))
	m2 := accept(t, a, []byte("two"))
	evs, _ := a.EventsSince(nil, 0)
	need, err := b.ApplyEvent(evs[0])
	if err != nil || !need {
		t.Fatalf("first apply: %v %v", need, err)
	}
	if need, err := b.ApplyEvent(evs[0]); err != nil || need {
		t.Fatalf("re-apply: %v %v", need, err)
	}
	accept(t, a, []byte("three"))
	all, _ := a.EventsSince(nil, 0)
	if _, err := b.ApplyEvent(all[2]); !errors.Is(err, ErrGap) {
		t.Fatalf("gap: %v", err)
	}
	// A batch with a gap keeps its valid prefix.
	ids, err := b.ApplyEvents([]Event{all[0], all[1], all[0]})
	if err != nil || !reflect.DeepEqual(ids, []string{m2.ID}) {
		t.Fatalf("batch: %v %v", ids, err)
	}
	if _, err := b.ApplyEvents([]Event{all[2], {Origin: 1, Seq: 9, Kind: KindState, MsgID: m1.ID, State: StateDeleted}}); !errors.Is(err, ErrGap) {
		t.Fatalf("batch gap: %v", err)
	}
	if h := b.Heads(); h[1] != 3 {
		t.Fatalf("heads %v", h)
	}
	bad := []Event{
		{Origin: 1, Seq: 4, Kind: "frobnicate", MsgID: m1.ID},
		{Origin: 1, Seq: 4, Kind: KindState, MsgID: m1.ID, State: "lost"},
		{Origin: 1, Seq: 4, Kind: KindState, MsgID: "../../etc", State: StateDeleted},
		{Origin: 1, Seq: 4, Kind: KindNew, MsgID: "1-4", Msg: &Meta{ID: "1-4", Origin: 1, Seq: 4, SHA256: "zz"}},
		{Origin: 1, Seq: 4, Kind: KindNew, MsgID: "2-4", Msg: &Meta{ID: "2-4", Origin: 2, Seq: 4}},
	}
	for _, ev := range bad {
		if _, err := b.ApplyEvent(ev); !errors.Is(err, ErrInvalid) {
			t.Fatalf("bad event %+v: %v", ev, err)
		}
	}
	if m, _ := b.Get(m1.ID); m.HaveBody || m.SHA256 != m1.SHA256 || m.Subject != m1.Subject {
		t.Fatalf("replica meta %+v", m)
	}
}

// TestStateMergeCommutes applies a message and state events of other origins
// in every order: the result depends only on the set of events.

func TestStateMergeCommutes(t *testing.T) {
	src := newStore(t, 1)
	m := accept(t, src, []byte("msg"))
	evs, _ := src.EventsSince(nil, 0)
	newEv := evs[0]
	st := func(origin uint64, state string) Event {
		return Event{Origin: origin, Seq: 1, Kind: KindState, MsgID: m.ID, State: state}
	}
	for _, tc := range []struct {
		evs  []Event
		want string
	}{
		{[]Event{newEv, st(2, StateDeleted), st(3, StateReleased)}, StateDeleted},
		{[]Event{newEv, st(2, StateReleased), st(3, StateReleased)}, StateReleased},
		{[]Event{newEv, st(2, StateQuarantined), st(3, StateReleased)}, StateReleased},
	} {
		for _, order := range permutations(len(tc.evs)) {
			s := newStore(t, 9)
			for _, i := range order {
				if _, err := s.ApplyEvent(tc.evs[i]); err != nil {
					t.Fatal(err)
				}
			}
			got, err := s.Get(m.ID)
			if err != nil || got.State != tc.want {
				t.Fatalf("order %v: state %q (%v), want %q", order, got.State, err, tc.want)
			}
			missing, _ := s.Missing()
			if (len(missing) == 1) != (tc.want != StateDeleted) {
				t.Fatalf("order %v: missing %v", order, missing)
			}
		}
	}
}

func permutations(n int) [][]int {
	if n == 1 {
		return [][]int{{0}}
	}
	var out [][]int
	for _, p := range permutations(n - 1) {
		for i := 0; i <= len(p); i++ {
			q := append(append(append([]int{}, p[:i]...), n-1), p[i:]...)
			out = append(out, q)
		}
	}
	return out
}

func TestSetStateAndList(t *testing.T) {
	s := newStore(t, 1)
	raw := message("x", 500)
	m1 := accept(t, s, raw)
	m2, _ := s.Accept("other@example.org", []string{"z@example.net"}, bytes.NewReader(raw))
	if got, err := s.SetState(m1.ID, StateReleased); err != nil || got.State != StateReleased {
		t.Fatalf("release: %+v %v", got, err)
	}
	if got, err := s.SetState(m1.ID, StateDeleted); err != nil || got.State != StateDeleted || got.HaveBody {
		t.Fatalf("delete: %+v %v", got, err)
	}
	if _, err := os.Stat(s.BodyPath(m1.ID)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("deleted body still on disk: %v", err)
	}
	if _, err := s.SetState(m1.ID, StateReleased); !errors.Is(err, ErrDeleted) {
		t.Fatalf("release deleted: %v", err)
	}
	if _, err := s.SetState(m1.ID, StateDeleted); err != nil {
		t.Fatalf("delete twice: %v", err)
	}
	if _, err := s.SetState("9-9", StateDeleted); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown: %v", err)
	}
	if _, err := s.SetState(m2.ID, "gone"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad state: %v", err)
	}
	if h := s.Heads(); h[1] != 4 { // 2 new + release + delete
		t.Fatalf("heads %v", h)
	}
	if n, b := s.Stats(); n != 1 || b != m2.Size {
		t.Fatalf("stats %d %d", n, b)
	}
	for _, c := range []struct {
		f    Filter
		want int
	}{
		{Filter{}, 1}, {Filter{State: StateDeleted}, 1}, {Filter{From: "OTHER"}, 1},
		{Filter{To: "z@"}, 1}, {Filter{To: "b@"}, 0}, {Filter{From: "nobody"}, 0},
	} {
		if l, err := s.List(c.f); err != nil || len(l) != c.want {
			t.Fatalf("list %+v: %d %v", c.f, len(l), err)
		}
	}
}

func TestPurgeAndLateEvents(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	var clock atomic.Int64
	clock.Store(t0.UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	var c1, c2 atomic.Uint64
	c1.Store(1)
	c2.Store(2)
	a := openStore(t, t.TempDir(), &c1, now)
	b := openStore(t, t.TempDir(), &c2, now)
	old := accept(t, a, message("old", 100))
	clock.Store(t0.Add(10 * 24 * time.Hour).UnixNano())
	fresh := accept(t, a, message("new", 100))
	if n, err := a.Purge(t0.Add(5 * 24 * time.Hour)); err != nil || n != 1 {
		t.Fatalf("purge: %d %v", n, err)
	}
	if _, err := a.Get(old.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("purged get: %v", err)
	}
	if _, err := os.Stat(a.BodyPath(old.ID)); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("purged body kept")
	}
	if n, _ := a.Stats(); n != 1 {
		t.Fatalf("stats %d", n)
	}
	// Late state events of another origin do not resurrect it.
	late := Event{Origin: 5, Seq: 1, Kind: KindState, MsgID: old.ID, State: StateReleased}
	if _, err := a.ApplyEvent(late); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Get(old.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("resurrected: %v", err)
	}
	if missing, _ := a.Missing(); len(missing) != 0 {
		t.Fatalf("missing %v", missing)
	}
	if l, _ := a.List(Filter{}); len(l) != 1 || l[0].ID != fresh.ID {
		t.Fatalf("list %v", l)
	}
	if n, _ := a.Purge(t0.Add(5 * 24 * time.Hour)); n != 0 {
		t.Fatalf("purge twice: %d", n)
	}
	// A node that purged before the message reached it keeps a tombstone only.
	if _, err := b.Purge(t0.Add(5 * 24 * time.Hour)); err != nil {
		t.Fatal(err)
	}
	need := replicate(t, a, b)
	if !reflect.DeepEqual(need, []string{fresh.ID}) {
		t.Fatalf("need %v", need)
	}
	if _, err := b.Get(old.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("b has old: %v", err)
	}
}

func TestEventsSinceAcrossOrigins(t *testing.T) {
	a, b, c := newStore(t, 1), newStore(t, 2), newStore(t, 3)
	for i := 0; i < 3; i++ {
		accept(t, a, []byte("a"))
		accept(t, b, []byte("b"))
	}
	replicate(t, a, c)
	replicate(t, b, c)
	// c serves both origins: d learns everything from c alone.
	d := newStore(t, 4)
	evs, err := c.EventsSince(Cursors{1: 1}, 0)
	if err != nil || len(evs) != 5 {
		t.Fatalf("since {1:1}: %d %v", len(evs), err)
	}
	var got []string
	for _, e := range evs {
		got = append(got, e.MsgID)
	}
	if want := []string{"1-2", "1-3", "2-1", "2-2", "2-3"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("order %v", got)
	}
	if evs, _ := c.EventsSince(nil, 2); len(evs) != 2 {
		t.Fatalf("limit: %d", len(evs))
	}
	if evs, _ := c.EventsSince(Cursors{1: 3, 2: 3}, 0); len(evs) != 0 {
		t.Fatalf("caught up: %d", len(evs))
	}
	for len(replicate(t, c, d)) > 0 {
	}
	if !reflect.DeepEqual(d.Heads(), Cursors{1: 3, 2: 3}) {
		t.Fatalf("d heads %v", d.Heads())
	}
}

func TestChangedAndWipe(t *testing.T) {
	s := newStore(t, 1)
	ch := s.Changed()
	select {
	case <-ch:
		t.Fatal("closed before a change")
	default:
	}
	m := accept(t, s, []byte("x"))
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatal("no change notification")
	}
	ch = s.Changed()
	if _, err := s.SetState(m.ID, StateReleased); err != nil {
		t.Fatal(err)
	}
	<-ch
	ch = s.Changed()
	if err := s.Wipe(); err != nil {
		t.Fatal(err)
	}
	<-ch
	if _, err := s.Get(m.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after wipe: %v", err)
	}
	if len(s.Heads()) != 0 {
		t.Fatalf("heads after wipe %v", s.Heads())
	}
	if m2 := accept(t, s, []byte("y")); m2.ID != "1-1" || !bytes.Equal(readBody(t, s, m2.ID), []byte("y")) {
		t.Fatalf("after wipe: %+v", m2)
	}
	ch = s.Changed()
	_ = s.Close()
	<-ch
	if _, err := s.Accept("a", nil, bytes.NewReader(nil)); !errors.Is(err, ErrClosed) {
		t.Fatalf("accept closed: %v", err)
	}
}

func TestStateEventBeforeItsMessage(t *testing.T) {
	src := newStore(t, 1)
	m := accept(t, src, []byte("early"))
	evs, _ := src.EventsSince(nil, 0)
	s := newStore(t, 3)
	if need, err := s.ApplyEvent(Event{Origin: 2, Seq: 1, Kind: KindState, MsgID: m.ID, State: StateReleased}); err != nil || need {
		t.Fatalf("early state: %v %v", need, err)
	}
	if _, err := s.Get(m.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get before new: %v", err)
	}
	need, err := s.ApplyEvent(evs[0])
	if err != nil || !need {
		t.Fatalf("new: %v %v", need, err)
	}
	if got, _ := s.Get(m.ID); got.State != StateReleased {
		t.Fatalf("state %q", got.State)
	}
	// Both events are kept and served onwards.
	if all, _ := s.EventsSince(nil, 0); len(all) != 2 {
		t.Fatalf("events %d", len(all))
	}
}

// TestImportKeepsReceived: a restored message keeps the time it was first received, in
// its metadata, in the event its replicas are made from, and for retention; it still gets
// this node's origin and the next ID.
func TestImportKeepsReceived(t *testing.T) {
	t0 := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	now := func() time.Time { return t0.Add(40 * 24 * time.Hour) }
	var cid atomic.Uint64
	cid.Store(3)
	s := openStore(t, t.TempDir(), &cid, now)
	first := accept(t, s, message("first", 50))
	got, err := s.Import("a@example.net", []string{"b@example.com"}, t0, bytes.NewReader(message("old", 100)))
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != "3-2" || got.Origin != 3 || !got.Received.Equal(t0) || first.ID != "3-1" {
		t.Fatalf("imported %s (origin %d) received %v", got.ID, got.Origin, got.Received)
	}
	evs, err := s.EventsSince(Cursors{3: 1}, 0)
	if err != nil || len(evs) != 1 || evs[0].Msg == nil || !evs[0].Msg.Received.Equal(t0) {
		t.Fatalf("event of the import: %+v %v", evs, err)
	}
	fresh, err := s.Import("a@example.net", []string{"b@example.com"}, time.Time{}, bytes.NewReader(message("no time", 10)))
	if err != nil || !fresh.Received.Equal(now()) {
		t.Fatalf("import without a time: received %v, want now %v (%v)", fresh.Received, now(), err)
	}
	// Retention counts from the original time: 30 days purges the imported message only.
	if n, err := s.Purge(now().Add(-30 * 24 * time.Hour)); err != nil || n != 1 {
		t.Fatalf("purge: %d %v", n, err)
	}
	if _, err := s.Get(got.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("old import survived retention: %v", err)
	}
}
