package raftnode

import (
	"context"
	"errors"
	"fmt"
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

// Node is this node's Raft instance with its stores.
//
// Lifecycle: New (no I/O), Open, then Close (idempotent). All methods are safe for
// concurrent use once Open has returned.
type Node struct {
	cfg    Config
	fsm    *fsm.FSM
	layer  raft.StreamLayer
	logger hclog.Logger

	mu        sync.Mutex // guards the fields below and applied waiters
	raft      *raft.Raft
	store     logStore
	transport *raft.NetworkTransport
	closed    bool
	applied   chan struct{} // closed and replaced on every apply

	// readyTerm is the term in which this node, as leader, has applied a barrier:
	// from then on its commit index covers every entry of earlier terms.
	readyTerm uint64
	done      chan struct{}
	wg        sync.WaitGroup
	// obs holds what Raft's observations tell (see observe.go).
	obs observed
}

// New returns a Node that will run f over layer. It validates cfg and does no I/O.
func New(cfg Config, f *fsm.FSM, layer raft.StreamLayer) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if f == nil || layer == nil {
		return nil, errors.New("raftnode: an FSM and a stream layer are required")
	}
	logger := cfg.Logger
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	n := &Node{cfg: cfg, fsm: f, layer: layer, logger: logger,
		applied: make(chan struct{}), done: make(chan struct{})}
	f.SetOnApply(n.notifyApplied)
	return n, nil
}

// DBPath is the file of the Raft log and stable store inside dir up to release 1ca55cd
// (now the write-ahead log in WALDir; see walstore.go).
func DBPath(dir string) string { return filepath.Join(dir, "raft.db") }

// Open opens the stores (moving a raft.db of an older release into the write-ahead log
// first), starts Raft and, for a standalone node with no state, bootstraps a one-voter
// configuration. A locked or corrupt store yields ErrLocked or ErrCorrupt with the file
// named.
func (n *Node) Open() error {
	if err := os.MkdirAll(n.cfg.Dir, 0o700); err != nil {
		return fmt.Errorf("create raft directory: %w", err)
	}
	store, err := openLogStore(n.cfg.Dir, n.cfg.OpenTimeout, n.logger)
	if err != nil {
		return err
	}
	walDir := WALDir(n.cfg.Dir)
	snaps, err := raft.NewFileSnapshotStoreWithLogger(n.cfg.Dir, n.cfg.SnapshotRetain, n.logger.Named("snapshot"))
	if err != nil {
		_ = store.Close()
		return fmt.Errorf("open snapshot store in %s: %w", n.cfg.Dir, err)
	}
	trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  n.layer,
		MaxPool: 3,
		Timeout: 5 * time.Second,
		Logger:  n.logger.Named("transport"),
	})
	rc := n.cfg.raftConfig()
	rc.Logger = n.logger
	// The leader reads back every entry it sends; keeping the newest in memory saves a
	// log read and a decode per entry per follower.
	logs, err := raft.NewLogCache(logCacheSize, store)
	if err != nil {
		_ = trans.Close()
		_ = store.Close()
		return fmt.Errorf("log cache: %w", err)
	}
	hasState, err := raft.HasExistingState(logs, store, snaps)
	if err != nil {
		_ = trans.Close()
		_ = store.Close()
		return fmt.Errorf("%w: %s: %v", ErrCorrupt, walDir, err)
	}
	r, err := raft.NewRaft(rc, n.fsm, logs, store, snaps, trans)
	if err != nil {
		_ = trans.Close()
		_ = store.Close()
		// raft does not wrap its snapshot errors in a sentinel: a failure to start while
		// snapshots are on disk (the stores opened fine above) is a failure to restore one.
		if errors.Is(err, fsm.ErrBadSnapshot) || hasSnapshots(snaps) {
			return fmt.Errorf("%w: snapshot in %s: %v", ErrCorrupt, filepath.Join(n.cfg.Dir, "snapshots"), err)
		}
		return fmt.Errorf("start raft: %w", err)
	}
	if !hasState && n.cfg.Bootstrap {
		cfg := raft.Configuration{Servers: []raft.Server{{
			Suffrage: raft.Voter, ID: n.cfg.LocalID, Address: n.cfg.Address,
		}}}
		if err := r.BootstrapCluster(cfg).Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			_ = r.Shutdown().Error()
			_ = trans.Close()
			_ = store.Close()
			return fmt.Errorf("bootstrap raft: %w", err)
		}
	}
	n.mu.Lock()
	n.raft, n.store, n.transport = r, store, trans
	n.mu.Unlock()
	n.wg.Add(1)
	go n.watchLeadership()
	n.observe(r)
	return nil
}

// logCacheSize is how many of the newest log entries stay in memory (raft.LogCache).
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
		return nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, path, err)
	}
}

func hasSnapshots(snaps raft.SnapshotStore) bool {
	list, err := snaps.List()
	return err == nil && len(list) > 0
}

// watchLeadership issues a barrier each time this node becomes leader, so that reads
// know when its commit index covers every earlier term.
func (n *Node) watchLeadership() {
	defer n.wg.Done()
	r := n.raftOrNil()
	if r == nil { // closed before this goroutine ran
		return
	}
	for {
		select {
		case <-n.done:
			return
		case isLeader := <-r.LeaderCh():
			if !isLeader {
				continue
			}
			term := r.CurrentTerm()
			if err := r.Barrier(defaultApplyTimeout).Error(); err != nil {
				n.logger.Warn("leader barrier failed", "term", term, "error", err)
				continue
			}
			n.mu.Lock()
			n.readyTerm = term
			n.mu.Unlock()
			n.notifyApplied(0)
		}
	}
}

func (n *Node) raftOrNil() *raft.Raft {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil
	}
	return n.raft
}

func (n *Node) notifyApplied(uint64) {
	n.mu.Lock()
	close(n.applied)
	n.applied = make(chan struct{})
	n.mu.Unlock()
}

// Close shuts Raft down and closes the stores. It is idempotent.
func (n *Node) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	r, store, trans := n.raft, n.store, n.transport
	close(n.done)
	n.mu.Unlock()
	n.obs.mu.Lock()
	n.obs.closed = true
	n.obs.fireChanged()
	n.obs.mu.Unlock()
	var errs []error
	if r != nil {
		errs = append(errs, r.Shutdown().Error())
	}
	n.wg.Wait()
	if trans != nil {
		errs = append(errs, trans.Close())
	}
	if store != nil {
		errs = append(errs, store.Close())
	}
	n.notifyApplied(0)
	return errors.Join(errs...)
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
