package raftnode

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/pmgcm/pmgcm/fsm"
)

// defaultApplyTimeout bounds a proposal when the caller's context has no deadline.
const defaultApplyTimeout = 10 * time.Second

// Node is this node's Raft instance with its stores. The Node outlives its Raft
// instance: Stop and Open, Restart (a join) and ForceRecover replace the raft.Raft in
// place, so callers keep one *Node for the life of the process and waiters (WaitApplied,
// LeaderChanged) survive a restart. Only Close is final.
//
// Lifecycle: New (no I/O), Open, then any of Stop/Open, Restart, ForceRecover, and Close
// (idempotent, final). All methods are safe for concurrent use; while Raft is not
// running, operations answer ErrClosed and waits keep waiting until their context ends
// or the node closes.
type Node struct {
	fsm    *fsm.FSM
	layers Layers
	logger hclog.Logger

	// life serializes Open, Stop, Restart, ForceRecover and Close with each other; it is
	// held across their I/O, and never taken by the operations of a running node.
	life sync.Mutex
	// confTurn (one slot) lets one membership change at a time through configChange,
	// from its wait for the master's disk to its answer (overlap.go).
	confTurn chan struct{}

	mu  sync.Mutex // guards the fields below; never held across I/O
	cfg Config     // LocalID and Bootstrap change on Restart
	run *instance  // the running Raft, nil while stopped
	// closed is set by Close: the node never runs again.
	closed  bool
	applied chan struct{} // closed and replaced on every apply
	// readyTerm is the term in which this node, as leader, has applied a barrier:
	// from then on its commit index covers every entry of earlier terms.
	readyTerm uint64
	// duties run on the leader, one goroutine each per term (see leader.go).
	duties []LeaderDuty
	done   chan struct{} // closed by Close
	// obs holds what Raft's observations tell (see observe.go).
	obs observed
}

// Layers returns a new view of the network for each run of Raft: raft's NetworkTransport
// closes its stream layer when Raft stops, so a Node restarted in place needs a fresh one
// every time (transport.Mux.RaftLayer makes one per call).
type Layers func() raft.StreamLayer

// instance is one run of Raft: from start to stop.
type instance struct {
	raft  *raft.Raft
	store logStore
	logs  *overlapStore // the log under the cache: the master's appends overlap replication
	trans *gatedTransport
	stop  chan struct{} // closed when the instance stops
	wg    sync.WaitGroup
}

// New returns a Node that will run f over the stream layers that layers makes. It
// validates cfg and does no I/O.
func New(cfg Config, f *fsm.FSM, layers Layers) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if f == nil || layers == nil {
		return nil, errors.New("raftnode: an FSM and a stream layer are required")
	}
	logger := cfg.Logger
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	n := &Node{cfg: cfg, fsm: f, layers: layers, logger: logger,
		applied: make(chan struct{}), done: make(chan struct{}), confTurn: make(chan struct{}, 1)}
	f.SetOnApply(n.notifyApplied)
	return n, nil
}

// DBPath is the file of the Raft log and stable store inside dir up to release 1ca55cd
// (now the write-ahead log in WALDir; see walstore.go).
func DBPath(dir string) string { return filepath.Join(dir, "raft.db") }

// Open opens the stores (moving a raft.db of an older release into the write-ahead log
// first), starts Raft and, for a standalone node with no state, bootstraps
// a one-voter configuration. A locked or corrupt database yields ErrLocked or ErrCorrupt
// with the file named. On a stopped node it starts Raft again (the state machine is
// rebuilt from the snapshot and the log); on a running one it does nothing; after Close
// it returns ErrClosed.
func (n *Node) Open() error {
	n.life.Lock()
	defer n.life.Unlock()
	return n.start()
}

// start opens the stores and starts Raft; the caller holds life.
func (n *Node) start() (err error) {
	n.mu.Lock()
	closed, running, cfg := n.closed, n.run != nil, n.cfg
	n.mu.Unlock()
	switch {
	case closed:
		return ErrClosed
	case running:
		return nil
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return fmt.Errorf("create raft directory: %w", err)
	}
	store, err := openLogStore(cfg.Dir, cfg.OpenTimeout, n.logger)
	if err != nil {
		return err
	}
	walDir := WALDir(cfg.Dir)
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.Dir, cfg.SnapshotRetain, n.logger.Named("snapshot"))
	if err != nil {
		_ = store.Close()
		return fmt.Errorf("open snapshot store in %s: %w", cfg.Dir, err)
	}
	trans := &gatedTransport{NetworkTransport: raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  boundedDial{StreamLayer: n.layers(), max: cfg.DialTimeout},
		MaxPool: 3,
		Timeout: 5 * time.Second,
		Logger:  n.logger.Named("transport"),
	})}
	rc := cfg.raftConfig()
	rc.Logger = n.logger
	// The leader reads back every entry it sends; keeping the newest in memory saves a
	// log read and a decode per entry per follower. Bounded in bytes too (logcache.go).
	var base raft.LogStore = store
	if wrapLogStore != nil {
		base = wrapLogStore(cfg.Dir, store)
	}
	overlap, err := newOverlapStore(base)
	if err != nil {
		_ = trans.Close()
		_ = store.Close()
		return storeErr(walDir, err)
	}
	logs, err := newLogCache(logCacheSize, logCacheBytes, overlap)
	if err != nil {
		_ = trans.Close()
		_ = store.Close()
		return fmt.Errorf("log cache: %w", err)
	}
	hasState, err := raft.HasExistingState(logs, store, snaps)
	if err != nil {
		_ = trans.Close()
		_ = store.Close()
		return storeErr(walDir, err)
	}
	// Raft rebuilds the state machine from the snapshot and the log: start it empty.
	n.fsm.Reset()
	// The master's own append runs beside its replication (overlap.go): entries are
	// applied, and followers told they are committed, only once they are on its disk.
	r, err := raft.NewRaft(rc, durableFSM{FSM: n.fsm, logs: overlap}, logs, store, snaps,
		capTransport{gatedTransport: trans, durable: overlap.durableIndex})
	if err != nil {
		_ = trans.Close()
		_ = store.Close()
		// raft does not wrap its snapshot errors in a sentinel: a failure to start while
		// snapshots are on disk (the stores opened fine above) is a failure to restore one.
		if errors.Is(err, fsm.ErrBadSnapshot) || hasSnapshots(snaps) {
			return fmt.Errorf("%w: snapshot in %s: %v", ErrCorrupt, filepath.Join(cfg.Dir, "snapshots"), err)
		}
		return fmt.Errorf("start raft: %w", err)
	}
	if !hasState && cfg.Bootstrap {
		if err := r.BootstrapCluster(cfg.singleVoter()).Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			_ = r.Shutdown().Error()
			trans.drain()
			_ = overlap.Close()
			_ = trans.Close()
			_ = store.Close()
			return fmt.Errorf("bootstrap raft: %w", err)
		}
	}
	overlap.setLeader(func() bool { return r.State() == raft.Leader })
	in := &instance{raft: r, store: store, logs: overlap, trans: trans, stop: make(chan struct{})}
	n.mu.Lock()
	n.run = in
	n.mu.Unlock()
	// Both goroutines are given r: a Stop that has begun makes the node's own
	// reference nil.
	in.wg.Add(1)
	go n.monitorLeadership(in)
	n.observe(in)
	return nil
}

// boundedDial caps the dial timeout raft asks for (its RPC timeout) at max.
type boundedDial struct {
	raft.StreamLayer
	max time.Duration
}

// Dial dials address within the shorter of timeout and max.
func (b boundedDial) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	if timeout <= 0 || timeout > b.max {
		timeout = b.max
	}
	return b.StreamLayer.Dial(address, timeout)
}

// wrapLogStore, when set (by tests), wraps each run's log store under the overlap layer
// (overlap.go); dir is the node's Raft directory.
var wrapLogStore func(dir string, s raft.LogStore) raft.LogStore

// logCacheSize is how many of the newest log entries stay in memory (logCache).
const logCacheSize = 512

func openStore(path string, timeout time.Duration) (*raftboltdb.BoltStore, error) {
	store, err := raftboltdb.New(raftboltdb.Options{
		Path:        path,
		BoltOptions: &bbolt.Options{Timeout: timeout, NoFreelistSync: true},
	})
	if err == nil {
		return store, nil
	}
	switch {
	case errors.Is(err, bolterrors.ErrTimeout):
		return nil, fmt.Errorf("%w: %s (held for more than %s)", ErrLocked, path, timeout)
	case errors.Is(err, os.ErrPermission):
		return nil, fmt.Errorf("open %s: %w", path, err)
	default:
		return nil, storeErr(path, err)
	}
}

func hasSnapshots(snaps raft.SnapshotStore) bool {
	list, err := snaps.List()
	return err == nil && len(list) > 0
}

func (n *Node) raftOrNil() *raft.Raft {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.run == nil {
		return nil
	}
	return n.run.raft
}

func (n *Node) notifyApplied(uint64) {
	n.mu.Lock()
	close(n.applied)
	n.applied = make(chan struct{})
	n.mu.Unlock()
}

// Stop hands leadership over (see handover) and stops Raft, closing its stores; the
// node can be opened again. Waiters keep waiting. It is a no-op on a stopped node.
func (n *Node) Stop() error {
	n.life.Lock()
	defer n.life.Unlock()
	return n.stopRun(true)
}

// Abandon stops Raft as Stop does but never hands leadership over: for a node that was
// removed from the cluster or fenced by a forced promotion, whose fellow voters of the
// old epoch must not be given mastership by it. The node can be opened again.
func (n *Node) Abandon() error {
	n.life.Lock()
	defer n.life.Unlock()
	return n.stopRun(false)
}

// stopRun stops the running instance, if any; with handover a leader first hands
// leadership to another voter. The caller holds life.
func (n *Node) stopRun(handover bool) error {
	n.mu.Lock()
	in := n.run
	n.mu.Unlock()
	if in == nil {
		return nil
	}
	if handover {
		n.handover(in.raft)
	}
	n.mu.Lock()
	n.run = nil
	n.readyTerm = 0
	close(in.stop)
	n.mu.Unlock()
	// Waiters on a leader change look again: there is none while Raft is stopped.
	n.obs.mu.Lock()
	n.obs.fireChanged()
	n.obs.mu.Unlock()
	errs := []error{in.raft.Shutdown().Error()}
	in.wg.Wait()
	in.trans.drain() // no heartbeat handled by the stores closed next
	// The master's last appends are on disk before the store closes (one fsync).
	errs = append(errs, in.logs.Close(), in.trans.Close(), in.store.Close())
	n.notifyApplied(0)
	return errors.Join(errs...)
}

// Close hands leadership over, stops Raft and closes the stores for good; waiters end
// with ErrClosed. It is idempotent.
func (n *Node) Close() error {
	n.life.Lock()
	defer n.life.Unlock()
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.mu.Unlock()
	err := n.stopRun(true)
	n.mu.Lock()
	n.closed = true
	close(n.done)
	n.mu.Unlock()
	n.obs.mu.Lock()
	n.obs.closed = true
	n.obs.fireChanged()
	n.obs.mu.Unlock()
	n.notifyApplied(0)
	return err
}

func timeoutFrom(ctx context.Context) time.Duration {
	if d, ok := ctx.Deadline(); ok {
		if t := time.Until(d); t > 0 {
			return t
		}
		return time.Millisecond
	}
	return defaultApplyTimeout
}
