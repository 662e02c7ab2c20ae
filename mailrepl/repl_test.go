package mailrepl

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/internal/testutil"
	"github.com/pmgcm/pmgcm/mailstore"
)

const settle = 20 * time.Second

func TestReplicatesEverywhereQuickly(t *testing.T) {
	c := newCluster(t, 3)
	c.start(0, 1, 2)
	var ms []mailstore.Meta
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range c.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; k < 10; k++ {
				m := c.accept(i, 1000*k)
				mu.Lock()
				ms = append(ms, m)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	for i := range c.nodes {
		testutil.Poll(t, "every message on every node", settle, testutil.Cond(func() bool { return c.hasAll(i, ms) }))
	}
	for i := range c.nodes {
		testutil.Poll(t, "backlog 0", settle, testutil.Cond(func() bool { return c.backlogZero(i) }))
		if n, _ := c.nodes[i].store.Stats(); n != 30 {
			t.Fatalf("node %d: %d messages", i, n)
		}
	}
	// Latency on a healthy, idle cluster: the long polls return at once.
	start := time.Now()
	m := c.accept(1, 5000)
	testutil.Poll(t, "the new message everywhere", 5*time.Second, testutil.Cond(func() bool {
		return c.hasAll(0, []mailstore.Meta{m}) && c.hasAll(2, []mailstore.Meta{m})
	}))
	if d := time.Since(start); d > 1500*time.Millisecond {
		t.Fatalf("replication took %s", d)
	} else {
		t.Logf("a new message reached both peers in %s", d)
	}
}

func TestLateReplicatorCatchesUp(t *testing.T) {
	c := newCluster(t, 3)
	c.start(0, 1)
	var ms []mailstore.Meta
	for k := 0; k < 20; k++ {
		ms = append(ms, c.accept(k%2, 20_000))
	}
	if _, err := c.nodes[0].store.SetState(ms[0].ID, mailstore.StateReleased); err != nil {
		t.Fatal(err)
	}
	testutil.Poll(t, "A and B in sync", settle, testutil.Cond(func() bool { return c.hasAll(0, ms) && c.hasAll(1, ms) }))
	if m, _ := c.nodes[2].repl.Backlog(); m != 0 {
		t.Fatalf("backlog before start: %d", m) // it knows no peer heads yet
	}
	c.start(2)
	testutil.Poll(t, "C caught up", settle, testutil.Cond(func() bool { return c.hasAll(2, ms) }))
	testutil.Poll(t, "C backlog 0", settle, testutil.Cond(func() bool { return c.backlogZero(2) }))
	if got, _ := c.nodes[2].store.Get(ms[0].ID); got.State != mailstore.StateReleased {
		t.Fatalf("state %q", got.State)
	}
}

func TestBrokenTransferResumes(t *testing.T) {
	c := newCluster(t, 3)
	c.nodes[0].cut.arm(100_000)
	m := c.accept(0, 1_000_000)
	c.start(0, 1, 2)
	for i := range c.nodes {
		testutil.Poll(t, "the big message everywhere", settle, c.verified(i, m))
	}
	resumed := false
	for _, off := range c.nodes[0].cut.seen() {
		resumed = resumed || off > 0
	}
	if c.nodes[0].cut.armed.Load() || !resumed {
		t.Fatalf("no resumed transfer: offsets %v", c.nodes[0].cut.seen())
	}
	for i := 1; i < 3; i++ {
		if _, err := os.Stat(c.nodes[i].store.BodyPath(m.ID) + ".part"); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("node %d kept a partial file: %v", i, err)
		}
	}
}

func TestTransitiveWhenOriginIsGone(t *testing.T) {
	c := newCluster(t, 3)
	c.start(0, 1)
	m := c.accept(0, 50_000)
	testutil.Poll(t, "B has it", settle, testutil.Cond(func() bool { return c.hasAll(1, []mailstore.Meta{m}) }))
	_ = c.nodes[0].repl.Close()
	_ = c.nodes[0].srv.Close()
	c.start(2)
	testutil.Poll(t, "C has it from B", settle, testutil.Cond(func() bool { return c.hasAll(2, []mailstore.Meta{m}) }))
	testutil.Poll(t, "C backlog 0", settle, testutil.Cond(func() bool { return c.backlogZero(2) }))
}

func TestCorruptBodyRepaired(t *testing.T) {
	c := newCluster(t, 3)
	c.start(0, 1, 2)
	m := c.accept(0, 30_000)
	for i := range c.nodes {
		testutil.Poll(t, "replicated", settle, c.verified(i, m))
	}
	b := c.nodes[1].store
	f, err := os.OpenFile(b.BodyPath(m.ID), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = f.WriteAt([]byte("bitrot"), 1234)
	_ = f.Close()
	if err := b.Verify(m.ID); !errors.Is(err, mailstore.ErrCorrupt) {
		t.Fatalf("verify: %v", err)
	}
	c.nodes[1].repl.Kick()
	testutil.Poll(t, "B repaired", settle, c.verified(1, m))
	testutil.Poll(t, "B backlog 0", settle, testutil.Cond(func() bool { return c.backlogZero(1) }))
}

func TestConcurrentDeleteAndRelease(t *testing.T) {
	c := newCluster(t, 3)
	c.start(0, 1, 2)
	ms := []mailstore.Meta{c.accept(0, 1000), c.accept(2, 1000)}
	for i := range c.nodes {
		testutil.Poll(t, "replicated", settle, testutil.Cond(func() bool { return c.hasAll(i, ms) }))
	}
	var wg sync.WaitGroup
	for _, op := range []struct {
		node  int
		state string
	}{{0, mailstore.StateDeleted}, {1, mailstore.StateReleased}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, m := range ms {
				if _, err := c.nodes[op.node].store.SetState(m.ID, op.state); err != nil && !errors.Is(err, mailstore.ErrDeleted) {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	for i, nd := range c.nodes {
		// The store removes a body file just after the record that no longer claims it
		// is committed: the file is part of what is awaited.
		testutil.Poll(t, "deleted everywhere, bodies removed", settle, func() error {
			for _, m := range ms {
				got, err := nd.store.Get(m.ID)
				if err != nil || got.State != mailstore.StateDeleted || got.HaveBody {
					return fmt.Errorf("node %d: %s is %+v (%v)", i, m.ID, got, err)
				}
				if _, err := os.Stat(nd.store.BodyPath(m.ID)); !errors.Is(err, os.ErrNotExist) {
					return fmt.Errorf("node %d kept the body of %s", i, m.ID)
				}
			}
			return nil
		})
		testutil.Poll(t, "backlog 0", settle, testutil.Cond(func() bool { return c.backlogZero(i) }))
		if n, _ := nd.store.Stats(); n != 0 {
			t.Fatalf("node %d: %d messages", i, n)
		}
	}
	// A state event needs no body, so the backlog says nothing of it: the heads converge
	// on their own time.
	testutil.Poll(t, "the same heads on every node", settle, func() error {
		h0 := c.nodes[0].store.Heads()
		for _, nd := range c.nodes[1:] {
			if h := nd.store.Heads(); !maps.Equal(h, h0) {
				return fmt.Errorf("heads differ: %v %v", h0, h)
			}
		}
		return nil
	})
	if h := c.nodes[0].store.Heads(); len(h) != 3 {
		t.Fatalf("heads %v: want events of all three origins", h)
	}
}

func TestConfigAndClose(t *testing.T) {
	if _, err := New(DefaultConfig()); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("empty config: %v", err)
	}
	c := newCluster(t, 2)
	r := c.nodes[0].repl
	_ = r.Close() // before Start
	r.Start()
	_ = r.Close()
	c.start(1)
	done := make(chan struct{})
	go func() { _ = c.nodes[1].repl.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close blocked by a long poll")
	}
}

// TestNewNodeSkipsCompactedEvents: messages past retention are purged and their events
// compacted on the running nodes; a node that starts afterwards skips to their floors and
// gets every live message, and nothing of the purged ones.
func TestNewNodeSkipsCompactedEvents(t *testing.T) {
	c := newCluster(t, 3)
	c.start(0, 1)
	a := c.nodes[0].store
	longAgo := time.Now().Add(-30 * 24 * time.Hour)
	var old []mailstore.Meta
	for k := 0; k < 5; k++ {
		m, err := a.Import("from@example.org", []string{"to@example.net"}, longAgo, bytes.NewReader([]byte("Subject: old\r\n\r\nold "+strconv.Itoa(k))))
		if err != nil {
			t.Fatal(err)
		}
		old = append(old, m)
	}
	var fresh []mailstore.Meta
	for k := 0; k < 4; k++ {
		fresh = append(fresh, c.accept(k%2, 5_000))
	}
	all := append(append([]mailstore.Meta(nil), old...), fresh...)
	testutil.Poll(t, "A and B in sync", settle, testutil.Cond(func() bool { return c.hasAll(0, all) && c.hasAll(1, all) }))
	cutoff := time.Now().Add(-10 * 24 * time.Hour)
	for _, nd := range c.nodes[:2] {
		if n, err := nd.store.Purge(cutoff); err != nil || n != len(old) {
			t.Fatalf("node %d purged %d (%v)", nd.cid, n, err)
		}
		if n, err := nd.store.Compact(); err != nil || n != len(old) {
			t.Fatalf("node %d compacted %d events (%v), want %d", nd.cid, n, err, len(old))
		}
	}
	c.start(2)
	cst := c.nodes[2].store
	testutil.Poll(t, "C has the live messages", settle, testutil.Cond(func() bool { return c.hasAll(2, fresh) }))
	testutil.Poll(t, "C backlog 0", settle, testutil.Cond(func() bool { return c.backlogZero(2) }))
	for _, m := range old {
		if _, err := cst.Get(m.ID); err == nil {
			t.Fatalf("C got %s, a message past retention", m.ID)
		}
	}
	if f := cst.Floors(); f[1] != uint64(len(old)) {
		t.Fatalf("C's floors %v, want origin 1 at %d", f, len(old))
	}
	if l, _ := cst.List(mailstore.Filter{}); len(l) != len(fresh) {
		t.Fatalf("C lists %d messages, want %d", len(l), len(fresh))
	}
}
