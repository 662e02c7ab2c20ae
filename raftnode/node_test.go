package raftnode

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/pmgcm/pmgcm/fsm"
)

// tcpLayer is a plain TCP raft.StreamLayer for tests on 127.0.0.1.
type tcpLayer struct{ net.Listener }

func (l tcpLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return net.DialTimeout("tcp", string(addr), timeout)
}

func newLayer(t *testing.T) tcpLayer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return tcpLayer{ln}
}

func testConfig(dir string, layer tcpLayer) Config {
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
	n, err := New(testConfig(dir, layer), f, layer)
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
	for {
		if _, err := n.ReadIndex(ctx); err == nil {
			break
		} else if ctx.Err() != nil {
			t.Fatalf("never became a ready leader: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	res, err := n.Apply(ctx, fsm.ConfigSet{Key: "a/b", Value: []byte("v")})
	if err != nil || res.Err != nil {
		t.Fatalf("apply: %v %v", err, res)
	}
	idx, err := n.ReadIndex(ctx)
	if err != nil || idx < res.Index {
		t.Fatalf("read index %d (%v), want >= %d", idx, err, res.Index)
	}
	if e, ok := f.Get("a/b"); !ok || string(e.Value) != "v" || e.Version != res.Index {
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
	if e, ok := f2.Get("a/b"); !ok || string(e.Value) != "v" {
		t.Fatalf("after reopen entry = %+v %v", e, ok)
	}
}

func TestOpenLockedAndCorrupt(t *testing.T) {
	dir := t.TempDir()
	n, _ := openNode(t, dir)
	layer := newLayer(t)
	cfg := testConfig(dir, layer)
	cfg.OpenTimeout = 100 * time.Millisecond
	n2, err := New(cfg, fsm.New(), layer)
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
	n, err := New(cfg, f, layer)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Open(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for !n.IsLeader() {
		if ctx.Err() != nil {
			t.Fatal("never became leader")
		}
		time.Sleep(10 * time.Millisecond)
	}
	res, err := n.Apply(ctx, fsm.ConfigSet{Key: "kept", Value: []byte("yes")})
	if err != nil || res.Err != nil {
		t.Fatalf("apply: %v %+v", err, res)
	}
	// A second voter that does not exist: from now on there is no quorum.
	if err := n.AddVoter(ctx, 2, "127.0.0.1:1"); err != nil {
		t.Fatal(err)
	}
	_ = n.Close()

	if err := Recover(cfg); err != nil {
		t.Fatal(err)
	}
	f2 := fsm.New()
	n2, err := New(cfg, f2, layer)
	if err != nil {
		t.Fatal(err)
	}
	if err := n2.Open(); err != nil {
		t.Fatal(err)
	}
	defer n2.Close()
	for {
		if _, err := n2.ReadIndex(ctx); err == nil {
			break
		} else if ctx.Err() != nil {
			t.Fatalf("recovered node never led: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if e, ok := f2.Get("kept"); !ok || string(e.Value) != "yes" {
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
	for !n.IsLeader() {
		if ctx.Err() != nil {
			t.Fatal("never became leader")
		}
		time.Sleep(10 * time.Millisecond)
	}
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
	n2, err := New(testConfig(dir, layer), fsm.New(), layer)
	if err != nil {
		t.Fatal(err)
	}
	err = n2.Open()
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), filepath.Join(dir, "snapshots")) {
		t.Fatalf("open with a damaged snapshot = %v, want ErrCorrupt naming the snapshot directory", err)
	}
	_ = layer.Close()
}
