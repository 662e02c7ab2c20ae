package daemon

import (
	"context"
	"errors"
	"time"

	"github.com/pmgcm/pmgcm/raftnode"
)

// raftSlot is the Raft instance that runs now, with a channel closed when another
// replaces it (join, re-admission, forced recovery). A removed or fenced node keeps its
// closed instance until a join or re-admission brings a new one.
type raftSlot struct {
	n        *raftnode.Node
	replaced chan struct{}
}

// rn returns the running Raft instance.
func (d *Daemon) rn() *raftnode.Node {
	if s := d.raftp.Load(); s != nil {
		return s.n
	}
	return nil
}

// setRaft makes n the running Raft instance and wakes whoever waits on the previous one.
func (d *Daemon) setRaft(n *raftnode.Node) {
	if old := d.raftp.Swap(&raftSlot{n: n, replaced: make(chan struct{})}); old != nil {
		close(old.replaced)
	}
}

// stopRaft closes the running Raft instance (this node was removed or fenced); it stays
// in place, closed, until a join or re-admission replaces it.
func (d *Daemon) stopRaft() {
	if n := d.rn(); n != nil {
		if err := n.Close(); err != nil {
			d.logger.Warn("stopping raft", "error", err)
		}
	}
}

// waitApplied waits until the local state machine has applied index, across Raft
// instances: while the instance is closed (this node was removed or fenced, or a join is
// replacing it) it waits for the next instance, not failing at once, so that a loop
// around it idles instead of spinning. It returns ctx's error when ctx ends and
// raftnode.ErrClosed once the daemon stops.
func (d *Daemon) waitApplied(ctx context.Context, index uint64) error {
	for {
		s := d.raftp.Load()
		if s == nil {
			return raftnode.ErrClosed // before Open made one
		}
		err := s.n.WaitApplied(ctx, index)
		if err == nil || ctx.Err() != nil || !errors.Is(err, raftnode.ErrClosed) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-d.stop:
			return err
		case <-s.replaced:
		}
	}
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
