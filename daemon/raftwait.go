package daemon

import (
	"context"
	"time"

	"github.com/pmgcm/pmgcm/raftnode"
)

// rn returns this node's Raft node (made once by Open; join, sync and forced recovery
// restart it in place).
func (d *Daemon) rn() *raftnode.Node { return d.raftp.Load() }

// stopRaft stops Raft (this node was removed or fenced). Stop, not Close: join or sync
// restarts it in place once the node is admitted again, and a stopped node's waits wait
// instead of failing at once, so the loops around them idle.
func (d *Daemon) stopRaft() {
	if n := d.rn(); n != nil {
		if err := n.Stop(); err != nil {
			d.logger.Warn("stopping raft", "error", err)
		}
	}
}

// waitApplied waits until the local state machine has applied index. While Raft is
// stopped (this node was removed or fenced, or a join restarts it) it waits rather than
// failing at once; it returns raftnode.ErrClosed once the daemon closes Raft for good.
func (d *Daemon) waitApplied(ctx context.Context, index uint64) error {
	n := d.rn()
	if n == nil {
		return raftnode.ErrClosed // before Open made one
	}
	return n.WaitApplied(ctx, index)
}

// pause waits for d, or until ctx ends (its error).
func pause(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
