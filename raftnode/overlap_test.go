package raftnode

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
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

// leaderOverlap is an overlapStore on a heldStore, on the leader, with entry 1 of term 1
// stored (seedTerm).
func leaderOverlap(t *testing.T) (*heldStore, *atomic.Bool, *overlapStore) {
	t.Helper()
	s := newHeldStore()
	leader := new(atomic.Bool)
	leader.Store(true)
	o := newTestOverlap(t, s, leader)
	seedTerm(t, o)
	return s, leader, o
}

// seedTerm stores entry 1 of term 1, synchronously (the first append of a term is), so
// that the leader's later appends of term 1 go to the writer.
func seedTerm(t *testing.T, o *overlapStore) {
	t.Helper()
	if err := o.StoreLogs([]*raft.Log{entry(1, 10)}); err != nil {
		t.Fatal(err)
	}
	if d := o.durableIndex(); d != 1 {
		t.Fatalf("durable %d after the first append of the term, want 1", d)
	}
}

func entryOfTerm(idx, term uint64) *raft.Log {
	l := entry(idx, 10)
	l.Term = term
	return l
}

// notReturned checks that done gets nothing for a while: the call is blocked.
func notReturned(t *testing.T, done <-chan error, what string) {
	t.Helper()
	select {
	case err := <-done:
		t.Fatalf("%s returned (%v)", what, err)
	case <-time.After(50 * time.Millisecond):
	}
}

// TestOverlapLeaderAppendsInBackground: on the leader StoreLogs returns while the store's
// append is held; the entries are readable at once and durable only once the append
// returned. Later entries queue behind it, in order.
func TestOverlapLeaderAppendsInBackground(t *testing.T) {
	s, _, o := leaderOverlap(t)
	s.held.Store(true)

	if err := o.StoreLogs([]*raft.Log{entry(2, 10), entry(3, 10), entry(4, 10)}); err != nil {
		t.Fatal(err)
	}
	waitAppends(t, s, 2)
	if err := o.StoreLogs([]*raft.Log{entry(5, 10)}); err != nil {
		t.Fatal(err)
	}
	if last, _ := o.LastIndex(); last != 5 {
		t.Fatalf("LastIndex %d while the append is held, want 5", last)
	}
	var l raft.Log
	if err := o.GetLog(3, &l); err != nil || l.Index != 3 {
		t.Fatalf("GetLog(3) = %v, index %d: an unwritten entry must be readable", err, l.Index)
	}
	if d := o.durableIndex(); d != 1 || storeLast(t, s) != 1 {
		t.Fatalf("durable %d, store's last %d while the append is held: want 1, 1", d, storeLast(t, s))
	}
	// Compaction of the head does not wait for the writer; the unwritten entries count
	// as the first of the emptied store.
	if err := o.DeleteRange(1, 1); err != nil {
		t.Fatal(err)
	}
	if first, _ := o.FirstIndex(); first != 2 {
		t.Fatalf("FirstIndex %d of an empty store with unwritten entries, want 2", first)
	}

	s.gate <- struct{}{} // 2-4 written; the writer takes 5 and is held again
	if !o.waitDurable(4) {
		t.Fatal("waitDurable(4) = false")
	}
	waitAppends(t, s, 3)
	if d := o.durableIndex(); d != 4 {
		t.Fatalf("durable %d with entry 5 held, want 4", d)
	}
	s.gate <- struct{}{}
	if !o.waitDurable(5) {
		t.Fatal("waitDurable(5) = false")
	}
	if got := s.appends(); len(got) != 3 || got[0] != 1 || got[1] != 2 || got[2] != 5 {
		t.Fatalf("appends began at %v, want [1 2 5]", got)
	}
}

// TestOverlapNewTermIsSynchronous: the first append of a leader's term (raft's noop) is
// on disk before StoreLogs returns (Figure 8, overlap.go), whatever the store held
// before: a fresh store, one of an older term, one whose log a snapshot install emptied.
func TestOverlapNewTermIsSynchronous(t *testing.T) {
	s := newHeldStore()
	var leader atomic.Bool
	leader.Store(true)
	o := newTestOverlap(t, s, &leader)
	s.held.Store(true)
	step := func(l *raft.Log) {
		t.Helper()
		done := make(chan error, 1)
		go func() { done <- o.StoreLogs([]*raft.Log{l}) }()
		notReturned(t, done, fmt.Sprintf("the first append of term %d with the store held", l.Term))
		s.gate <- struct{}{}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if d, last := o.durableIndex(), storeLast(t, s); d != l.Index || last != l.Index {
			t.Fatalf("after the first append of term %d: durable %d, store's last %d, want %d", l.Term, d, last, l.Index)
		}
	}
	step(entryOfTerm(1, 1)) // a fresh store
	step(entryOfTerm(2, 2)) // a new term

	// A follower's log emptied by a snapshot install (raft: DeleteRange(first, last)),
	// then made master. (raft may then also compact the empty log with DeleteRange(0,
	// hi), which raft.InmemStore cannot take: it is left out here.)
	leader.Store(false)
	s.held.Store(false)
	for i := uint64(3); i <= 100; i++ {
		if err := o.StoreLogs([]*raft.Log{entryOfTerm(i, 2)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := o.DeleteRange(1, 100); err != nil {
		t.Fatal(err)
	}
	leader.Store(true)
	s.held.Store(true)
	step(entryOfTerm(5001, 3))
	// The next append of the same term goes to the writer.
	if err := o.StoreLogs([]*raft.Log{entryOfTerm(5002, 3)}); err != nil {
		t.Fatal(err)
	}
	if d := o.durableIndex(); d != 5001 {
		t.Fatalf("durable %d with the term's second append held, want 5001", d)
	}
	s.gate <- struct{}{}
	if !o.waitDurable(5002) {
		t.Fatal("waitDurable(5002) = false")
	}
}

// TestOverlapFollowerWaitsForWriter: an append off the leader waits until the background
// appends are written, so the store sees the entries in order, and is synchronous.
func TestOverlapFollowerWaitsForWriter(t *testing.T) {
	s, leader, o := leaderOverlap(t)
	s.held.Store(true)
	if err := o.StoreLogs([]*raft.Log{entry(2, 10)}); err != nil {
		t.Fatal(err)
	}
	waitAppends(t, s, 2)

	leader.Store(false) // stepped down
	done := make(chan error, 1)
	go func() { done <- o.StoreLogs([]*raft.Log{entry(3, 10)}) }()
	notReturned(t, done, "a follower's append with the leader's append held")
	s.held.Store(false)
	s.gate <- struct{}{}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := s.appends(); len(got) != 3 || got[1] != 2 || got[2] != 3 {
		t.Fatalf("appends began at %v, want [1 2 3]", got)
	}
	if d, last := o.durableIndex(), storeLast(t, s); d != 3 || last != 3 {
		t.Fatalf("after a follower's append: durable %d, store's last %d, want 3, 3", d, last)
	}
}

// TestOverlapDeleteRange: a truncation that reaches the unwritten entries waits for the
// writer, and the append after any truncation is synchronous.
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

	done := make(chan error, 1)
	go func() { done <- o.DeleteRange(5, 6) }()
	notReturned(t, done, "a truncation over a held append")
	s.gate <- struct{}{}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if last := storeLast(t, s); last != 4 {
		t.Fatalf("after truncating 5-6: store's last %d, want 4", last)
	}
	s.held.Store(false)
	if err := o.StoreLogs([]*raft.Log{entry(5, 10)}); err != nil {
		t.Fatal(err)
	}
	if d, last := o.durableIndex(), storeLast(t, s); d != 5 || last != 5 {
		t.Fatalf("the append after a truncation: durable %d, store's last %d, want 5, 5 (synchronous)", d, last)
	}
}

// TestOverlapFailedAppend: a failed background append is reported (onFail: the process
// stops in production), every later call fails with it, and the entry is never durable.
func TestOverlapFailedAppend(t *testing.T) {
	s, leader, o := leaderOverlap(t)
	failed := make(chan error, 1)
	o.onFail = func(err error) { failed <- err }
	s.fail.Store(true)
	if err := o.StoreLogs([]*raft.Log{entry(2, 10)}); err != nil {
		t.Fatal(err)
	}
	err := <-failed
	if err == nil {
		t.Fatal("onFail called with nil")
	}
	if err2 := o.StoreLogs([]*raft.Log{entry(3, 10)}); err2 == nil {
		t.Fatal("an append after a failed one succeeded")
	}
	leader.Store(false)
	if err2 := o.StoreLogs([]*raft.Log{entry(3, 10)}); err2 == nil {
		t.Fatal("a follower's append after a failed one succeeded")
	}
	waited := make(chan bool, 1)
	go func() { waited <- o.waitDurable(2) }()
	if err := o.Close(); err == nil {
		t.Fatal("Close after a failed append returned nil")
	}
	if <-waited {
		t.Fatal("waitDurable(2) = true for an entry whose append failed")
	}
}

// TestOverlapPendingBound: the entries not yet written are bounded; an append past the
// bound waits for the writer.
func TestOverlapPendingBound(t *testing.T) {
	s, _, o := leaderOverlap(t)
	o.maxBytes = 3 * logSize(entry(2, 1000))
	s.held.Store(true)
	for i := uint64(2); i <= 4; i++ {
		if err := o.StoreLogs([]*raft.Log{entry(i, 1000)}); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	go func() { done <- o.StoreLogs([]*raft.Log{entry(5, 1000)}) }()
	notReturned(t, done, "an append past the bound with the writer held")
	s.held.Store(false)
	s.gate <- struct{}{}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !o.waitDurable(5) {
		t.Fatal("waitDurable(5) = false")
	}
}

// TestDurableFSMWaits: the state machine applies an entry only once the log has it on
// disk.
func TestDurableFSMWaits(t *testing.T) {
	// raft would hand a batching FSM its entries through ApplyBatch, past Apply's wait:
	// an ApplyBatch on fsm.FSM must be gated here too before it is promoted.
	if _, ok := any(durableFSM{}).(raft.BatchingFSM); ok {
		t.Fatal("durableFSM is a raft.BatchingFSM: its ApplyBatch does not wait for the disk")
	}
	s, _, o := leaderOverlap(t)
	f := fsm.New()
	d := durableFSM{FSM: f, logs: o}
	cmd, err := fsm.Encode(fsm.ConfigSet{Key: "k", Value: []byte("v")})
	if err != nil {
		t.Fatal(err)
	}
	l := &raft.Log{Index: 2, Term: 1, Type: raft.LogCommand, Data: cmd}
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
	if e, ok, _ := f.Get("k"); !ok || string(e.Value) != "v" {
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
	nodes, heldOf := heldCluster(t)
	leader, _ := leaderOf(t, nodes, nil, 10*time.Second)
	h := heldOf(leader)
	release := h.letGo
	before := leader.Stats().LastIndex

	h.hold()
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
		if e, ok, _ := n.fsm.Get("held"); !ok || string(e.Value) != "x" {
			t.Fatalf("held = %q, %v on a node after the write", e.Value, ok)
		}
	}
}

// heldCluster is testCluster of 3 nodes whose log stores can be held (passStore), each
// let go when the test ends, before the nodes close: a failed test must not hang there.
func heldCluster(t *testing.T) ([]*Node, func(*Node) *passStore) {
	t.Helper()
	var mu sync.Mutex
	stores := map[string]*passStore{}
	wrapLogStore = func(dir string, s raft.LogStore) raft.LogStore {
		p := &passStore{LogStore: s}
		mu.Lock()
		stores[dir] = p
		mu.Unlock()
		return p
	}
	t.Cleanup(func() { wrapLogStore = nil })
	nodes := testCluster(t, 3, nil)
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, p := range stores {
			p.letGo()
		}
	})
	return nodes, func(n *Node) *passStore {
		mu.Lock()
		defer mu.Unlock()
		return stores[n.cfg.Dir]
	}
}

// passStore passes every call to its store; while held, its appends wait until it lets
// go.
type passStore struct {
	raft.LogStore
	mu   sync.Mutex
	gate chan struct{} // nil: not held; closed by letGo
}

func (p *passStore) StoreLogs(logs []*raft.Log) error {
	p.mu.Lock()
	g := p.gate
	p.mu.Unlock()
	if g != nil {
		<-g
	}
	return p.LogStore.StoreLogs(logs)
}

// hold makes the appends from now on wait.
func (p *passStore) hold() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.gate == nil {
		p.gate = make(chan struct{})
	}
}

// letGo releases every held append and stops holding.
func (p *passStore) letGo() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.gate != nil {
		close(p.gate)
		p.gate = nil
	}
}

func (p *passStore) IsMonotonic() bool {
	m, ok := p.LogStore.(raft.MonotonicLogStore)
	return ok && m.IsMonotonic()
}

// TestNewMasterCommitsOnlyWithItsNoopOnDisk is Raft's Figure 8 on the overlap: a write E
// of the first master's term is in every log (the first master's own append held), then
// leadership moves to x, whose disk is held too. raft on x commits E through x's noop
// only; until that noop is on x's disk no node may apply E (a power loss of x would lose
// the noop, and a node without E could then win and overwrite it). Once x's disk lets
// go, E is applied everywhere.
func TestNewMasterCommitsOnlyWithItsNoopOnDisk(t *testing.T) {
	nodes, heldOf := heldCluster(t)
	l, _ := leaderOf(t, nodes, nil, 10*time.Second)
	var x, f *Node
	for _, n := range nodes {
		switch {
		case n == l:
		case x == nil:
			x = n
		default:
			f = n
		}
	}
	hl, hx := heldOf(l), heldOf(x)

	hl.hold()
	before := l.Stats().LastIndex
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _ = l.Apply(ctx, fsm.ConfigSet{Key: "e", Value: []byte("x")})
	}()
	var e uint64
	testutil.Poll(t, "E in both followers' logs", 10*time.Second, testutil.Cond(func() bool {
		e = l.Stats().LastIndex
		return e > before && x.Stats().LastIndex >= e && f.Stats().LastIndex >= e
	}))
	hx.hold()
	xcid, err := strconv.ParseUint(string(x.cfg.LocalID), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = l.TransferLeadership(xcid, string(x.cfg.Address)) }()
	x.mu.Lock()
	xin := x.run
	x.mu.Unlock()
	testutil.Poll(t, "x leading", 10*time.Second, testutil.Cond(func() bool { return xin.raft.State() == raft.Leader }))
	// 100 of the master's commit-timeout sends would have told f.
	err = testutil.WaitEvery(context.Background(), "f applying E", 100*DefaultConfig().CommitTimeout, 5*time.Millisecond,
		testutil.Cond(func() bool { return f.fsm.AppliedIndex() >= e }))
	if err == nil {
		t.Fatalf("f applied E (%d) while x's noop was not on x's disk (x's durable index %d)", e, xin.logs.durableIndex())
	}
	hx.letGo()
	hl.letGo()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, n := range nodes {
		if err := n.WaitApplied(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
}

// TestConfigChangeWaitsForMasterDisk: a membership change is proposed only once the
// master's log is on its disk, so that raft, which admits a change once the one before
// counts as committed, never has two in flight; one that cannot wait that long is not
// proposed ("not sent", ErrTimeout) and the configuration stays as it was.
func TestConfigChangeWaitsForMasterDisk(t *testing.T) {
	nodes, heldOf := heldCluster(t)
	leader, _ := leaderOf(t, nodes, nil, 10*time.Second)
	h := heldOf(leader)
	release := h.letGo

	h.hold()
	before := leader.Stats().LastIndex
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _ = leader.Apply(ctx, fsm.ConfigSet{Key: "held", Value: []byte("x")})
	}()
	testutil.Poll(t, "the write with the master's writer", 10*time.Second, testutil.Cond(func() bool {
		return leader.Stats().LastIndex > before
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	added := make(chan error, 1)
	go func() { added <- leader.AddNonvoter(ctx, 9, "127.0.0.1:9") }()
	var err error
	select {
	case err = <-added:
	case <-time.After(5 * time.Second):
		release()
		t.Fatalf("AddNonvoter with a 200 ms deadline still waiting after 5 s: proposed behind the master's held disk (%v)", <-added)
	}
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("AddNonvoter with the master's disk held: %v, want ErrTimeout", err)
	}
	conf, err := leader.Configuration()
	if err != nil {
		t.Fatal(err)
	}
	if len(conf.Servers) != 3 {
		t.Fatalf("configuration %v after a change that was not proposed", conf.Servers)
	}
	release()
	ctx2, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel2()
	if err := leader.AddNonvoter(ctx2, 9, "127.0.0.1:9"); err != nil {
		t.Fatal(err)
	}
}

// TestConcurrentConfigChangesOneAtATime: four membership changes asked at the same moment,
// with the master's disk held, never have two in its log: each is proposed only after
// the one before was answered (raft would admit the next once the last counts as
// committed, on the master's copy that is not on its disk). Without the one-at-a-time
// rule the race shows in some rounds: in one run of three without the race detector,
// in every run with it (as make test runs it).
func TestConcurrentConfigChangesOneAtATime(t *testing.T) {
	nodes, heldOf := heldCluster(t)
	leader, _ := leaderOf(t, nodes, nil, 10*time.Second)
	h := heldOf(leader)
	leader.mu.Lock()
	in := leader.run
	leader.mu.Unlock()
	for round := uint64(0); round < 10; round++ {
		h.hold()
		before := in.raft.LastIndex()
		start := make(chan struct{})
		errs := make(chan error, 4)
		for i := range uint64(4) {
			cid := 10 + 4*round + i
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				<-start
				errs <- leader.AddNonvoter(ctx, cid, fmt.Sprintf("127.0.0.1:%d", cid))
			}()
		}
		close(start)
		// The second change would be appended within a few ms of the first's commit.
		both := testutil.WaitEvery(context.Background(), "two changes in the master's log", 25*DefaultConfig().CommitTimeout,
			5*time.Millisecond, testutil.Cond(func() bool { return in.raft.LastIndex() >= before+2 }))
		durable := in.logs.durableIndex()
		h.letGo()
		for range 4 {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		if both == nil && durable <= before {
			t.Fatalf("round %d: two membership changes in the master's log (last %d) with the first (%d) not on its disk (durable %d)",
				round, in.raft.LastIndex(), before+1, durable)
		}
	}
}

// TestConfigChangeTurnTimeout: a membership change asked while another is in flight
// waits for its turn within its deadline, and past it is not proposed: ErrTimeout.
func TestConfigChangeTurnTimeout(t *testing.T) {
	nodes, heldOf := heldCluster(t)
	leader, _ := leaderOf(t, nodes, nil, 10*time.Second)
	h := heldOf(leader)
	h.hold()
	first := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		first <- leader.AddNonvoter(ctx, 9, "127.0.0.1:9")
	}()
	testutil.Poll(t, "the first change in flight", 10*time.Second, testutil.Cond(func() bool { return len(leader.confTurn) == 1 }))
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := leader.AddNonvoter(ctx, 10, "127.0.0.1:10"); !errors.Is(err, ErrTimeout) {
		t.Fatalf("a change behind one in flight, past its deadline: %v, want ErrTimeout", err)
	}
	h.letGo()
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	conf, err := leader.Configuration()
	if err != nil {
		t.Fatal(err)
	}
	for _, srv := range conf.Servers {
		if srv.ID == ServerID(10) {
			t.Fatalf("the change that timed out is in the configuration: %v", conf.Servers)
		}
	}
}

// TestOverlapFailStopEndsProcess: in production a failed background append ends the
// process (failStop), so that nothing runs on with entries raft counts as stored
// that are not; a restart recovers from what is on disk. The test runs itself in a
// child whose store fails, and reads how the child ended.
func TestOverlapFailStopEndsProcess(t *testing.T) {
	const env = "PMGCM_RAFTNODE_FAILSTOP_CHILD"
	if os.Getenv(env) == "1" {
		s, _, o := leaderOverlap(t)
		if o.onFail == nil {
			t.Fatal("no onFail")
		}
		s.fail.Store(true)
		if err := o.StoreLogs([]*raft.Log{entry(2, 10)}); err != nil {
			t.Fatal(err)
		}
		<-make(chan struct{}) // the writer's failStop ends the process
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestOverlapFailStopEndsProcess$", "-test.count=1", "-test.timeout=30s")
	cmd.Env = append(os.Environ(), env+"=1")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("the child did not fail: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "the master could not write its Raft log") || strings.Contains(string(out), "test timed out") {
		t.Fatalf("the child did not end by failStop (exit %d):\n%s", ee.ExitCode(), out)
	}
}
