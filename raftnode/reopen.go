package raftnode

import (
	"github.com/hashicorp/raft"
)

// RestartOptions says how Restart starts Raft again.
type RestartOptions struct {
	// LocalID is the node's Raft server ID from now on (a joining node takes the CID the
	// cluster gave it); empty keeps the current one.
	LocalID raft.ServerID
	// Bootstrap replaces Config.Bootstrap: a node that joined a cluster must not
	// bootstrap its own.
	Bootstrap bool
	// Prepare, if not nil, runs while Raft is stopped, before it starts again: the place
	// to remove the Raft directory (a join replaces the node's Raft state). An error
	// leaves Raft stopped.
	Prepare func(dir string) error
}

// Restart stops Raft (no handover: the caller replaces this node's Raft state), runs
// opts.Prepare and starts Raft again as opts says, in place: the *Node, its leader duties
// and its waiters stay. The state machine is rebuilt from what is on disk.
func (n *Node) Restart(opts RestartOptions) error {
	n.life.Lock()
	defer n.life.Unlock()
	if err := n.stopRun(false); err != nil {
		n.logger.Warn("stopping raft for a restart", "error", err)
	}
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return ErrClosed
	}
	if opts.LocalID != "" {
		n.cfg.LocalID = opts.LocalID
	}
	n.cfg.Bootstrap = opts.Bootstrap
	dir := n.cfg.Dir
	n.mu.Unlock()
	if opts.Prepare != nil {
		if err := opts.Prepare(dir); err != nil {
			return err
		}
	}
	return n.start()
}

// ForceRecover makes this node the single voter of its configuration, in place, for a
// cluster that lost its quorum for good: it stops Raft (no handover: there is no quorum
// to hand over to), rewrites the Raft state (recoverOffline: raft.RecoverCluster), and starts Raft again, which
// then elects itself. Every entry of the local log is kept, committed or not.
func (n *Node) ForceRecover() error {
	n.life.Lock()
	defer n.life.Unlock()
	if err := n.stopRun(false); err != nil {
		n.logger.Warn("stopping raft for recovery", "error", err)
	}
	n.mu.Lock()
	cfg, closed := n.cfg, n.closed
	n.mu.Unlock()
	if closed {
		return ErrClosed
	}
	cfg.Logger = n.logger
	if err := recoverOffline(cfg); err != nil {
		return err
	}
	return n.start()
}
