package raftnode

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/pmgcm/pmgcm/fsm"
	"github.com/pmgcm/pmgcm/internal/testutil"
)

// heldStore is an in-memory log store whose appends can be held (a slow fsync) or
// failed, and which records the first index of each append in order.
type heldStore struct {
	*raft.InmemStore
	held atomic.Bool
	gate chan struct{} // an append waits for a receive here while held
	once sync.Once     // letGo's
	fail atomic.Bool

	mu     sync.Mutex
	starts []uint64 // the first index of each append, in the order they began
}

func newHeldStore() *heldStore {
	return &heldStore{InmemStore: raft.NewInmemStore(), gate: make(chan struct{})}
}

// letGo stops holding appends and releases every held one, once.
func letGo(once *sync.Once, held *atomic.Bool, gate chan struct{}) {
	once.Do(func() {
		held.Store(false)
		close(gate)
	})
}

func (s *heldStore) StoreLogs(logs []*raft.Log) error {
	s.mu.Lock()
	s.starts = append(s.starts, logs[0].Index)
	s.mu.Unlock()
	if s.held.Load() {
		<-s.gate
	}
	if s.fail.Load() {
		return errors.New("input/output error")
	}
	return s.InmemStore.StoreLogs(logs)
}

func (s *heldStore) appends() []uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]uint64(nil), s.starts...)
}

// storeLast is the last index the store itself has.
func storeLast(t *testing.T, s raft.LogStore) uint64 {
	t.Helper()
	last, err := s.LastIndex()
	if err != nil {
		t.Fatal(err)
	}
	return last
}

func newTestOverlap(t *testing.T, s raft.LogStore, leader *atomic.Bool) *overlapStore {
	t.Helper()
	o, err := newOverlapStore(s)
	if err != nil {
		t.Fatal(err)
	}
	o.setLeader(leader.Load)
	t.Cleanup(func() { _ = o.Close() })
	if h, ok := s.(*heldStore); ok {
		// First (cleanups run last first): a failed test must not hang in Close.
		t.Cleanup(func() { letGo(&h.once, &h.held, h.gate) })
	}
	return o
}

// waitAppends waits until the store has begun n appends.
func waitAppends(t *testing.T, s *heldStore, n int) {
	t.Helper()
	testutil.Poll(t, fmt.Sprintf("%d appends begun", n), 10*time.Second, testutil.Cond(func() bool { return len(s.appends()) >= n }))
}

// TestOverlapLeaderAppendsInBackground: on the leader StoreLogs returns while the store's
// append is held; the entries are readable at once and durable only once the append
// returned. Later entries queue behind it, in order.
func TestOverlapLeaderAppendsInBackground(t *testing.T) {
	s := newHeldStore()
	var leader atomic.Bool
	leader.Store(true)
	o := newTestOverlap(t, s, &leader)
	s.held.Store(true)

	if err := o.StoreLogs([]*raft.Log{entry(1, 10), entry(2, 10), entry(3, 10)}); err != nil {
		t.Fatal(err)
	}
	waitAppends(t, s, 1)
	if err := o.StoreLogs([]*raft.Log{entry(4, 10)}); err != nil {
		t.Fatal(err)
	}
	if last, _ := o.LastIndex(); last != 4 {
		t.Fatalf("LastIndex %d while the append is held, want 4", last)
	}
	var l raft.Log
	if err := o.GetLog(2, &l); err != nil || l.Index != 2 {
		t.Fatalf("GetLog(2) = %v, index %d: an unwritten entry must be readable", err, l.Index)
	}
	if first, _ := o.FirstIndex(); first != 1 {
		t.Fatalf("FirstIndex %d of an empty store with unwritten entries, want 1", first)
	}
	if d := o.durableIndex(); d != 0 || storeLast(t, s) != 0 {
		t.Fatalf("durable %d, store's last %d while the append is held: want 0, 0", d, storeLast(t, s))
	}

	s.gate <- struct{}{} // 1-3 written; the writer takes 4 and is held again
	if !o.waitDurable(3) {
		t.Fatal("waitDurable(3) = false")
	}
	waitAppends(t, s, 2)
	if d := o.durableIndex(); d != 3 {
		t.Fatalf("durable %d with entry 4 held, want 3", d)
	}
	s.gate <- struct{}{}
	if !o.waitDurable(4) {
		t.Fatal("waitDurable(4) = false")
	}
	if got := s.appends(); len(got) != 2 || got[0] != 1 || got[1] != 4 {
		t.Fatalf("appends began at %v, want [1 4]", got)
	}
}

// TestOverlapFollowerWaitsForWriter: an append off the leader waits until the background
// appends are written, so the store sees the entries in order, and is synchronous.
func TestOverlapFollowerWaitsForWriter(t *testing.T) {
	s := newHeldStore()
	var leader atomic.Bool
	leader.Store(true)
	o := newTestOverlap(t, s, &leader)
	s.held.Store(true)
	if err := o.StoreLogs([]*raft.Log{entry(1, 10)}); err != nil {
		t.Fatal(err)
	}
	waitAppends(t, s, 1)

	leader.Store(false) // stepped down
	done := make(chan error, 1)
	go func() { done <- o.StoreLogs([]*raft.Log{entry(2, 10)}) }()
	select {
	case err := <-done:
		t.Fatalf("a follower's append returned (%v) before the leader's held append was written", err)
	case <-time.After(50 * time.Millisecond):
	}
	s.held.Store(false)
	s.gate <- struct{}{}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := s.appends(); len(got) != 2 || got[0] != 1 || got[1] != 2 {
		t.Fatalf("appends began at %v, want [1 2]", got)
	}
	if d, last := o.durableIndex(), storeLast(t, s); d != 2 || last != 2 {
		t.Fatalf("after a follower's append: durable %d, store's last %d, want 2, 2", d, last)
	}
}

// TestOverlapDeleteRange: compaction of the head does not wait for a held append; a
// truncation that reaches the unwritten entries waits for it, and lowers durable.
func TestOverlapDeleteRange(t *testing.T) {
	s := newHeldStore()
	var leader atomic.Bool
	o := newTestOverlap(t, s, &leader)
	for i := uint64(1); i <= 5; i++ {
		if err := o.StoreLogs([]*raft.Log{entry(i, 10)}); err != nil {
			t.Fatal(err)
		}
	}
	leader.Store(true)
	s.held.Store(true)
	if err := o.StoreLogs([]*raft.Log{entry(6, 10)}); err != nil {
		t.Fatal(err)
	}
	waitAppends(t, s, 6)
	if err := o.DeleteRange(1, 2); err != nil { // below the held entry: at once
		t.Fatal(err)
	}
	if first, _ := s.FirstIndex(); first != 3 {
		t.Fatalf("the store's first index %d after deleting 1-2, want 3", first)
	}

	done := make(chan error, 1)
	go func() { done <- o.DeleteRange(5, 6) }()
	select {
	case err := <-done:
		t.Fatalf("a truncation over a held append returned (%v) before it was written", err)
	case <-time.After(50 * time.Millisecond):
	}
	s.gate <- struct{}{}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if d, last := o.durableIndex(), storeLast(t, s); d != 4 || last != 4 {
		t.Fatalf("after truncating 5-6: durable %d, store's last %d, want 4, 4", d, last)
	}
}

// TestOverlapFailedAppend: a failed background append is reported (onFail: the process
// stops in production), every later call fails with it, and the entry is never durable.
func TestOverlapFailedAppend(t *testing.T) {
	s := newHeldStore()
	var leader atomic.Bool
	leader.Store(true)
	o := newTestOverlap(t, s, &leader)
	failed := make(chan error, 1)
	o.onFail = func(err error) { failed <- err }
	s.fail.Store(true)
	if err := o.StoreLogs([]*raft.Log{entry(1, 10)}); err != nil {
		t.Fatal(err)
	}
	err := <-failed
	if err == nil {
		t.Fatal("onFail called with nil")
	}
	if err2 := o.StoreLogs([]*raft.Log{entry(2, 10)}); err2 == nil {
		t.Fatal("an append after a failed one succeeded")
	}
	leader.Store(false)
	if err2 := o.StoreLogs([]*raft.Log{entry(2, 10)}); err2 == nil {
		t.Fatal("a follower's append after a failed one succeeded")
	}
	waited := make(chan bool, 1)
	go func() { waited <- o.waitDurable(1) }()
	if err := o.Close(); err == nil {
		t.Fatal("Close after a failed append returned nil")
	}
	if <-waited {
		t.Fatal("waitDurable(1) = true for an entry whose append failed")
	}
}

// TestOverlapPendingBound: the entries not yet written are bounded; an append past the
// bound waits for the writer.
func TestOverlapPendingBound(t *testing.T) {
	s := newHeldStore()
	var leader atomic.Bool
	leader.Store(true)
	o := newTestOverlap(t, s, &leader)
	o.maxBytes = 3 * logSize(entry(1, 1000))
	s.held.Store(true)
	for i := uint64(1); i <= 3; i++ {
		if err := o.StoreLogs([]*raft.Log{entry(i, 1000)}); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	go func() { done <- o.StoreLogs([]*raft.Log{entry(4, 1000)}) }()
	select {
	case err := <-done:
		t.Fatalf("an append past the bound returned (%v) with the writer held", err)
	case <-time.After(50 * time.Millisecond):
	}
	s.held.Store(false)
	s.gate <- struct{}{}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !o.waitDurable(4) {
		t.Fatal("waitDurable(4) = false")
	}
}

// TestDurableFSMWaits: the state machine applies an entry only once the log has it on
// disk.
func TestDurableFSMWaits(t *testing.T) {
	s := newHeldStore()
	var leader atomic.Bool
	leader.Store(true)
	o := newTestOverlap(t, s, &leader)
	f := fsm.New()
	d := durableFSM{FSM: f, logs: o}
	cmd, err := fsm.Encode(fsm.ConfigSet{Key: "k", Value: []byte("v")})
	if err != nil {
		t.Fatal(err)
	}
	l := &raft.Log{Index: 1, Term: 1, Type: raft.LogCommand, Data: cmd}
	s.held.Store(true)
	if err := o.StoreLogs([]*raft.Log{l}); err != nil {
		t.Fatal(err)
	}
	applied := make(chan interface{}, 1)
	go func() { applied <- d.Apply(l) }()
	select {
	case <-applied:
		t.Fatal("an entry was applied before it was on disk")
	case <-time.After(50 * time.Millisecond):
	}
	if f.AppliedIndex() != 0 {
		t.Fatalf("applied index %d before the entry is on disk", f.AppliedIndex())
	}
	s.gate <- struct{}{}
	if res, ok := (<-applied).(*fsm.Result); !ok || res.Err != nil {
		t.Fatalf("Apply once on disk = %#v", res)
	}
	if e, ok := f.Get("k"); !ok || string(e.Value) != "v" {
		t.Fatalf("k = %q, %v after the apply", e.Value, ok)
	}
}

// TestCapTransportCommitIndex: AppendEntries requests, sent alone or through a pipeline,
// tell the follower a commit index of at most the durable index, and the caller's
// request is left as it was.
func TestCapTransportCommitIndex(t *testing.T) {
	recv, err := raft.NewTCPTransport("127.0.0.1:0", nil, 2, 5*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = recv.Close() })
	got := make(chan uint64, 4)
	go func() {
		for rpc := range recv.Consumer() {
			if req, ok := rpc.Command.(*raft.AppendEntriesRequest); ok {
				got <- req.LeaderCommitIndex
			}
			rpc.Respond(&raft.AppendEntriesResponse{Success: true}, nil)
		}
	}()
	send, err := raft.NewTCPTransport("127.0.0.1:0", nil, 2, 5*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	var durable atomic.Uint64
	durable.Store(7)
	c := capTransport{gatedTransport: &gatedTransport{NetworkTransport: send}, durable: durable.Load}
	t.Cleanup(func() { _ = c.Close() })

	req := &raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{ID: []byte("1"), Addr: []byte("a")}, Term: 1,
		PrevLogEntry: 5, PrevLogTerm: 1, LeaderCommitIndex: 10,
		Entries: []*raft.Log{{Index: 6, Term: 1, Type: raft.LogCommand}}}
	var resp raft.AppendEntriesResponse
	if err := c.AppendEntries("2", recv.LocalAddr(), req, &resp); err != nil {
		t.Fatal(err)
	}
	if ci := <-got; ci != 7 {
		t.Fatalf("the follower was told commit index %d with 7 durable, want 7", ci)
	}
	if req.LeaderCommitIndex != 10 {
		t.Fatalf("the caller's request was changed: commit index %d", req.LeaderCommitIndex)
	}

	p, err := c.AppendEntriesPipeline("2", recv.LocalAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	durable.Store(12)
	if _, err := p.AppendEntries(req, &raft.AppendEntriesResponse{}); err != nil {
		t.Fatal(err)
	}
	<-p.Consumer() // the pipeline holds no answer unread
	if ci := <-got; ci != 10 {
		t.Fatalf("through the pipeline, commit index %d with 12 durable, want 10 (the leader's)", ci)
	}
	durable.Store(8)
	if _, err := p.AppendEntries(req, &raft.AppendEntriesResponse{}); err != nil {
		t.Fatal(err)
	}
	<-p.Consumer() // the pipeline holds no answer unread
	if ci := <-got; ci != 8 {
		t.Fatalf("through the pipeline, commit index %d with 8 durable, want 8", ci)
	}
}

// TestNothingAppliedBeforeMasterDurable: in a 3-node cluster whose master's log append
// is held (a slow disk), a write reaches the followers' logs and raft counts it as
// committed, but no node applies it and the proposer has no answer until the master's
// append is on disk. A power loss of the master in that window could undo it; nothing
// has acted on it.
func TestNothingAppliedBeforeMasterDurable(t *testing.T) {
	var mu sync.Mutex
	stores := map[string]*passStore{}
	wrapLogStore = func(dir string, s raft.LogStore) raft.LogStore {
		p := &passStore{LogStore: s, gate: make(chan struct{})}
		mu.Lock()
		stores[dir] = p
		mu.Unlock()
		return p
	}
	t.Cleanup(func() { wrapLogStore = nil })
	nodes := testCluster(t, 3, nil)
	leader, _ := leaderOf(t, nodes, nil, 10*time.Second)
	mu.Lock()
	h := stores[leader.cfg.Dir]
	mu.Unlock()
	release := func() { letGo(&h.once, &h.held, h.gate) }
	t.Cleanup(release) // before the nodes close: a failed test must not hang there
	before := leader.Stats().LastIndex

	h.held.Store(true)
	type answer struct {
		res *fsm.Result
		err error
	}
	answered := make(chan answer, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		res, err := leader.Apply(ctx, fsm.ConfigSet{Key: "held", Value: []byte("x")})
		answered <- answer{res, err}
	}()
	var idx uint64
	testutil.Poll(t, "the master's raft counting the write as committed", 10*time.Second, testutil.Cond(func() bool {
		st := leader.Stats()
		if st.LastIndex > before && st.CommitIndex == st.LastIndex && leader.fsm.AppliedIndex() < st.LastIndex {
			idx = st.LastIndex
			return true
		}
		return false
	}))
	for _, n := range nodes {
		if n != leader {
			testutil.Poll(t, "the write in a follower's log", 10*time.Second, testutil.Cond(func() bool { return n.Stats().LastIndex >= idx }))
		}
	}
	// Several of the leader's commit-timeout sends (20 ms) would have told the followers.
	select {
	case a := <-answered:
		t.Fatalf("the write was answered (%v, %v) before the master had it on disk", a.res, a.err)
	case <-time.After(10 * DefaultConfig().CommitTimeout):
	}
	for i, n := range nodes {
		st := n.Stats()
		if n.fsm.AppliedIndex() >= idx || (n != leader && st.CommitIndex >= idx) {
			t.Fatalf("node %d: applied %d, commit index %d, with entry %d not on the master's disk", i+1, n.fsm.AppliedIndex(), st.CommitIndex, idx)
		}
	}

	release()
	a := <-answered
	if a.err != nil || a.res.Err != nil {
		t.Fatalf("the write once on disk: %v, %v", a.err, a.res)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, n := range nodes {
		if err := n.WaitApplied(ctx, a.res.Index); err != nil {
			t.Fatal(err)
		}
		if e, ok := n.fsm.Get("held"); !ok || string(e.Value) != "x" {
			t.Fatalf("held = %q, %v on a node after the write", e.Value, ok)
		}
	}
}

// passStore passes every call to its store; its appends wait for a receive on gate
// while held.
type passStore struct {
	raft.LogStore
	held atomic.Bool
	gate chan struct{}
	once sync.Once // letGo's
}

func (p *passStore) StoreLogs(logs []*raft.Log) error {
	if p.held.Load() {
		<-p.gate
	}
	return p.LogStore.StoreLogs(logs)
}

func (p *passStore) IsMonotonic() bool {
	m, ok := p.LogStore.(raft.MonotonicLogStore)
	return ok && m.IsMonotonic()
}
