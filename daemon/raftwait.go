package daemon

import (
	"context"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"

	"github.com/pmgcm/pmgcm/raftnode"
)

// rn returns this node's Raft node (made once by Open; join, sync and forced recovery
// restart it in place).
func (d *Daemon) rn() *raftnode.Node { return d.raftp.Load() }

// raftSlot owns the Raft node slot across restarts in place: stopping the node (a
// removed or fenced node) and waiting on whichever instance runs now.
type raftSlot struct {
	p      *atomic.Pointer[raftnode.Node]
	logger hclog.Logger
}

// newRaftSlot returns the slot of d's Raft node (Daemon.raftp).
func newRaftSlot(d *Daemon) *raftSlot { return &raftSlot{p: &d.raftp, logger: d.logger} }

// stop stops Raft (this node was removed or fenced). Abandon, not Close: join or sync
// restarts it in place once the node is admitted again, and a stopped node's waits wait
// instead of failing at once, so the loops around them idle; and not Stop, which would
// hand mastership to another voter of the old epoch.
func (r *raftSlot) stop() {
	if n := r.p.Load(); n != nil {
		if err := n.Abandon(); err != nil {
			r.logger.Warn("stopping raft", "error", err)
		}
	}
}

// waitApplied waits until the local state machine has applied index. While Raft is
// stopped (this node was removed or fenced, or a join restarts it) it waits rather than
// failing at once; it returns raftnode.ErrClosed once the daemon closes Raft for good.
func (r *raftSlot) waitApplied(ctx context.Context, index uint64) error {
	n := r.p.Load()
	if n == nil {
		return raftnode.ErrClosed // before Open made one
	}
	return n.WaitApplied(ctx, index)
}
