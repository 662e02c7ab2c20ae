package raftnode

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/pmgcm/pmgcm/fsm"
	"github.com/pmgcm/pmgcm/internal/testutil"
)

// tcpLayer is a plain TCP raft.StreamLayer for tests on 127.0.0.1.
type tcpLayer struct{ net.Listener }

func (l tcpLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return net.DialTimeout("tcp", string(addr), timeout)
}

// tcpLayers hands a Node one tcpLayer per run of Raft, all on the same address (raft
// closes its layer when it stops).
type tcpLayers struct {
	t    testing.TB
	mu   sync.Mutex
	cur  net.Listener
	used bool
}

func newLayer(t *testing.T) *tcpLayers {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return &tcpLayers{t: t, cur: ln}
}

// Next is the Layers of a test node.
func (l *tcpLayers) Next() raft.StreamLayer {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.used {
		ln, err := net.Listen("tcp", l.cur.Addr().String())
		if err != nil {
			l.t.Errorf("listen again on %s: %v", l.cur.Addr(), err)
		} else {
			l.cur = ln
		}
	}
	l.used = true
	return tcpLayer{l.cur}
}

// Addr is the address every run listens on.
func (l *tcpLayers) Addr() net.Addr { return l.cur.Addr() }

// Close closes the current listener.
func (l *tcpLayers) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cur.Close()
}

func testConfig(dir string, layer *tcpLayers) Config {
	cfg := DefaultConfig()
	cfg.Dir = dir
	cfg.LocalID = ServerID(1)
	cfg.Address = raft.ServerAddress(layer.Addr().String())
	cfg.Bootstrap = true
	cfg.HeartbeatTimeout = 100 * time.Millisecond
	cfg.ElectionTimeout = 100 * time.Millisecond
	cfg.LeaderLeaseTimeout = 50 * time.Millisecond
	return cfg
}

func openNode(t *testing.T, dir string) (*Node, *fsm.FSM) {
	t.Helper()
	layer := newLayer(t)
	f := fsm.New()
	n, err := New(testConfig(dir, layer), f, layer.Next)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() })
	return n, f
}

func TestStandaloneBootstrapApplyRead(t *testing.T) {
	dir := t.TempDir()
	n, f := openNode(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	testutil.Poll(t, "a ready leader", 10*time.Second, func() error {
		_, err := n.ReadIndex(ctx)
		return err
	})
	res, err := n.Apply(ctx, fsm.ConfigSet{Key: "a/b", Value: []byte("v")})
	if err != nil || res.Err != nil {
		t.Fatalf("apply: %v %v", err, res)
	}
	idx, err := n.ReadIndex(ctx)
	if err != nil || idx < res.Index {
		t.Fatalf("read index %d (%v), want >= %d", idx, err, res.Index)
	}
	if e, ok, _ := f.Get("a/b"); !ok || string(e.Value) != "v" || e.Version != res.Index {
		t.Fatalf("entry = %+v", e)
	}
	st := n.Stats()
	if st.State != "Leader" || st.Suffrage != "voter" || st.AppliedIndex < res.Index {
		t.Fatalf("stats = %+v", st)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := n.Apply(ctx, fsm.ConfigSet{Key: "x", Value: nil}); !errors.Is(err, ErrClosed) {
		t.Fatalf("apply after close = %v, want ErrClosed", err)
	}

	// Reopen: the entry comes back from the log.
	n2, f2 := openNode(t, dir)
	if err := n2.WaitApplied(ctx, res.Index); err != nil {
		t.Fatal(err)
	}
	if e, ok, _ := f2.Get("a/b"); !ok || string(e.Value) != "v" {
		t.Fatalf("after reopen entry = %+v %v", e, ok)
	}
}

func TestOpenLockedAndCorrupt(t *testing.T) {
	dir := t.TempDir()
	n, _ := openNode(t, dir)
	layer := newLayer(t)
	cfg := testConfig(dir, layer)
	cfg.OpenTimeout = 100 * time.Millisecond
	n2, err := New(cfg, fsm.New(), layer.Next)
	if err != nil {
		t.Fatal(err)
	}
	if err := n2.Open(); !errors.Is(err, ErrLocked) {
		t.Fatalf("second open = %v, want ErrLocked", err)
	}
	_ = n.Close()
	// Damaged stores: TestOpenCorruptWAL.
}

func TestConfigValidate(t *testing.T) {
	base := DefaultConfig()
	base.Dir, base.LocalID, base.Address = "d", "1", "127.0.0.1:1"
	if err := base.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mut := range map[string]func(*Config){
		"no dir":       func(c *Config) { c.Dir = "" },
		"no id":        func(c *Config) { c.LocalID = "" },
		"no address":   func(c *Config) { c.Address = "" },
		"open timeout": func(c *Config) { c.OpenTimeout = 0 },
		"lease":        func(c *Config) { c.LeaderLeaseTimeout = 2 * c.HeartbeatTimeout },
	} {
		c := base
		mut(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: Validate accepted it", name)
		}
	}
}

// TestRecoverSingleVoter: a node whose configuration names a peer that will never come
// back cannot elect itself; after Recover it does, with every entry kept.
func TestRecoverSingleVoter(t *testing.T) {
	dir := t.TempDir()
	layer := newLayer(t)
	cfg := testConfig(dir, layer)
	f := fsm.New()
	n, err := New(cfg, f, layer.Next)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Open(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	testutil.Poll(t, "leader", 10*time.Second, testutil.Cond(n.IsLeader))
	res, err := n.Apply(ctx, fsm.ConfigSet{Key: "kept", Value: []byte("yes")})
	if err != nil || res.Err != nil {
		t.Fatalf("apply: %v %+v", err, res)
	}
	// A second voter that does not exist: from now on there is no quorum.
	if err := n.AddVoter(ctx, 2, "127.0.0.1:1"); err != nil {
		t.Fatal(err)
	}
	_ = n.Close()

	if err := recoverOffline(cfg); err != nil {
		t.Fatal(err)
	}
	f2 := fsm.New()
	n2, err := New(cfg, f2, layer.Next)
	if err != nil {
		t.Fatal(err)
	}
	if err := n2.Open(); err != nil {
		t.Fatal(err)
	}
	defer n2.Close()
	testutil.Poll(t, "the recovered node a ready leader", 10*time.Second, func() error {
		_, err := n2.ReadIndex(ctx)
		return err
	})
	if e, ok, _ := f2.Get("kept"); !ok || string(e.Value) != "yes" {
		t.Fatalf("entry lost in recovery: %+v %v", e, ok)
	}
	c, err := n2.Configuration()
	if err != nil || len(c.Servers) != 1 || c.Servers[0].ID != ServerID(1) {
		t.Fatalf("configuration after recovery = %+v %v", c, err)
	}
}

// TestOpenCorruptSnapshot: a node whose only snapshot is damaged refuses to start with
// ErrCorrupt naming the snapshot directory.
func TestOpenCorruptSnapshot(t *testing.T) {
	dir := t.TempDir()
	n, _ := openNode(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	testutil.Poll(t, "leader", 10*time.Second, testutil.Cond(n.IsLeader))
	for i := 0; i < 20; i++ {
		if _, err := n.Apply(ctx, fsm.ConfigSet{Key: fmt.Sprintf("k%d", i), Value: []byte("v")}); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.raftOrNil().Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	_ = n.Close()
	states, _ := filepath.Glob(filepath.Join(dir, "snapshots", "*", "state.bin"))
	if len(states) != 1 {
		t.Fatalf("snapshots on disk: %v", states)
	}
	if err := os.WriteFile(states[0], []byte("damaged"), 0o600); err != nil {
		t.Fatal(err)
	}
	layer := newLayer(t)
	n2, err := New(testConfig(dir, layer), fsm.New(), layer.Next)
	if err != nil {
		t.Fatal(err)
	}
	err = n2.Open()
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), filepath.Join(dir, "snapshots")) {
		t.Fatalf("open with a damaged snapshot = %v, want ErrCorrupt naming the snapshot directory", err)
	}
	_ = layer.Close()
}
