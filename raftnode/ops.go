package raftnode

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/hashicorp/raft"

	"github.com/pmgcm/pmgcm/fsm"
	"github.com/pmgcm/pmgcm/membership"
)

// Apply proposes cmd on this node, which must be the leader, and returns the state
// machine's result once the entry is committed and applied. ErrNotLeader, ErrNoLeader,
// ErrTimeout and ErrClosed mean the command was never appended to the log: it may be
// sent to the master again. ErrUnknownOutcome means it was appended and may still take
// effect: callers must neither assume it failed nor propose it again (see appendErr).
func (n *Node) Apply(ctx context.Context, cmd fsm.Command) (*fsm.Result, error) {
	r := n.raftOrNil()
	if r == nil {
		return nil, ErrClosed
	}
	b, err := fsm.Encode(cmd)
	if err != nil {
		return nil, err
	}
	f := r.Apply(b, timeoutFrom(ctx))
	if err := f.Error(); err != nil {
		return nil, n.appendErr(err, f.Index())
	}
	res, ok := f.Response().(*fsm.Result)
	if !ok {
		return nil, fmt.Errorf("raftnode: unexpected apply response %T", f.Response())
	}
	return res, nil
}

// appendErr maps the error of a future that appends a log entry (Apply, a configuration
// change). index is the future's Index(): raft v1.8.0 gives an entry its index in
// dispatchLogs, in the same step that stores it, so a future with an index was
// appended, whatever its error (ErrLeadershipLost, ErrRaftShutdown from processLogs after
// the commit, a log store error) and may take effect: ErrUnknownOutcome. Reading Index
// after Error is race-free: raft sets it before it responds.
//
// Without an index the entry was never appended: ErrEnqueueTimeout (ApplyLog and
// requestConfigChange give up before the leader loop took the future),
// ErrRaftShutdown before it was enqueued, ErrNotLeader from a follower or a stepping-down
// leader, ErrLeadershipTransferInProgress. Those map as mapErr does, and are safe to send
// again.
func (n *Node) appendErr(err error, index uint64) error {
	if index > 0 {
		return fmt.Errorf("%w: entry %d was appended but not known to commit: %v", ErrUnknownOutcome, index, err)
	}
	return n.mapErr(err)
}

func (n *Node) mapErr(err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader):
		return n.notLeader()
	case errors.Is(err, raft.ErrLeadershipLost):
		return ErrUnknownOutcome
	case errors.Is(err, raft.ErrLeadershipTransferInProgress):
		// Refused before it was appended: safe to send to the next master.
		return fmt.Errorf("%w: a leadership transfer is under way", ErrNotLeader)
	case errors.Is(err, raft.ErrEnqueueTimeout):
		// Raft never took the operation: nothing was appended (see appendErr).
		return fmt.Errorf("%w: %v", ErrTimeout, err)
	case errors.Is(err, raft.ErrRaftShutdown):
		return ErrClosed
	default:
		return err
	}
}

// NotLeader is the error for an operation refused because this node is not the leader:
// it wraps ErrNotLeader and names the leader, or is ErrNoLeader when there is none.
func (n *Node) NotLeader() error { return n.notLeader() }

func (n *Node) notLeader() error {
	addr, id := n.Leader()
	if addr == "" {
		return ErrNoLeader
	}
	return fmt.Errorf("%w: the master is cid %s at %s", ErrNotLeader, id, addr)
}

// Leader returns the address and server ID of the current leader, empty when unknown.
func (n *Node) Leader() (raft.ServerAddress, raft.ServerID) {
	r := n.raftOrNil()
	if r == nil {
		return "", ""
	}
	return r.LeaderWithID()
}

// SinceLeaderContact is how long ago this node last heard from its leader: 0 on the
// leader itself, and -1 when it has never heard from one.
func (n *Node) SinceLeaderContact() time.Duration {
	r := n.raftOrNil()
	if r == nil {
		return -1
	}
	if r.State() == raft.Leader {
		return 0
	}
	lc := r.LastContact()
	if lc.IsZero() {
		return -1
	}
	return time.Since(lc)
}

// IsLeader reports whether this node is the leader.
func (n *Node) IsLeader() bool {
	r := n.raftOrNil()
	return r != nil && r.State() == raft.Leader
}

// ReadIndex returns an index at or after every write acknowledged before the call, having
// confirmed with a quorum that this node is still the leader. The local state machine has
// already applied it: a leader acknowledges a write only after applying it, and the
// barrier of its term covers the writes of earlier leaders. Reads served after it returns
// are linearizable; a follower serves one once its own state machine reaches the index.
//
// The index is the state machine's, not Raft's commit index: barrier and no-op entries
// never reach the state machine, so waiting for them there would never end.
func (n *Node) ReadIndex(ctx context.Context) (uint64, error) {
	r := n.raftOrNil()
	if r == nil {
		return 0, ErrClosed
	}
	if r.State() != raft.Leader {
		return 0, n.notLeader()
	}
	if err := n.waitReady(ctx, r); err != nil {
		return 0, err
	}
	idx := n.fsm.AppliedIndex()
	if err := r.VerifyLeader().Error(); err != nil {
		return 0, n.mapErr(err)
	}
	return idx, nil
}

// waitReady waits until the leader's barrier for its current term has been applied.
func (n *Node) waitReady(ctx context.Context, r *raft.Raft) error {
	for {
		n.mu.Lock()
		ready := n.readyTerm == r.CurrentTerm()
		ch := n.applied
		n.mu.Unlock()
		if ready {
			return nil
		}
		if r.State() != raft.Leader {
			return n.notLeader()
		}
		if err := waitCh(ctx, ch, n.done); err != nil {
			return err
		}
	}
}

// WaitApplied blocks until the state machine has applied index, ctx ends or the node
// closes. index must be a state-machine index (see ReadIndex), not Raft's commit index.
func (n *Node) WaitApplied(ctx context.Context, index uint64) error {
	for {
		n.mu.Lock()
		ch := n.applied
		n.mu.Unlock()
		if n.fsm.AppliedIndex() >= index {
			return nil
		}
		if err := waitCh(ctx, ch, n.done); err != nil {
			return err
		}
	}
}

func waitCh(ctx context.Context, ch, done <-chan struct{}) error {
	select {
	case <-ch:
		return nil
	case <-done:
		return ErrClosed
	case <-ctx.Done():
		return fmt.Errorf("%w: %v", ErrTimeout, ctx.Err())
	}
}

// Stats is the Raft view of this node that status shows.
type Stats struct {
	State string
	// Term, LastIndex, CommitIndex and AppliedIndex are Raft's; AppliedIndex counts
	// every entry type, so it reaches CommitIndex on a node that is in sync.
	Term         uint64
	LastIndex    uint64
	CommitIndex  uint64
	AppliedIndex uint64
	// LastLogTerm is the term of the last log entry: with LastIndex it orders logs as
	// a Raft vote does (the longer log has the higher term, then the higher index).
	LastLogTerm uint64
	// LastContact is the time since the leader was last heard from; 0 on the leader.
	LastContact time.Duration
	// Suffrage is "voter", "nonvoter", or "" when this node is not in the configuration.
	Suffrage string
}

// Stats returns this node's Raft statistics.
func (n *Node) Stats() Stats {
	r := n.raftOrNil()
	if r == nil {
		return Stats{State: "Shutdown"}
	}
	st := Stats{
		State:        r.State().String(),
		Term:         r.CurrentTerm(),
		LastIndex:    r.LastIndex(),
		CommitIndex:  r.CommitIndex(),
		AppliedIndex: r.AppliedIndex(),
	}
	if t, err := strconv.ParseUint(r.Stats()["last_log_term"], 10, 64); err == nil {
		st.LastLogTerm = t
	}
	if r.State() != raft.Leader {
		if lc := r.LastContact(); !lc.IsZero() {
			st.LastContact = time.Since(lc)
		}
	}
	if cfg, err := n.Configuration(); err == nil {
		for _, s := range cfg.Servers {
			if s.ID == n.localID() {
				st.Suffrage = suffrageName(s.Suffrage)
			}
		}
	}
	return st
}

func suffrageName(s raft.ServerSuffrage) string {
	if s == raft.Voter {
		return "voter"
	}
	return "nonvoter"
}

// Configuration returns the latest Raft configuration known to this node.
func (n *Node) Configuration() (raft.Configuration, error) {
	r := n.raftOrNil()
	if r == nil {
		return raft.Configuration{}, ErrClosed
	}
	f := r.GetConfiguration()
	if err := f.Error(); err != nil {
		return raft.Configuration{}, n.mapErr(err)
	}
	return f.Configuration(), nil
}

// AddNonvoter adds (or updates) server cid at addr as a non-voter. Leader only.
func (n *Node) AddNonvoter(ctx context.Context, cid uint64, addr string) error {
	return n.configChange(ctx, func(r *raft.Raft, t time.Duration) raft.IndexFuture {
		return r.AddNonvoter(ServerID(cid), raft.ServerAddress(addr), 0, t)
	})
}

// AddVoter makes server cid at addr a voter. Leader only. In raft v1.8.0 this takes
// effect at once, so call it only for a node that has caught up.
func (n *Node) AddVoter(ctx context.Context, cid uint64, addr string) error {
	return n.configChange(ctx, func(r *raft.Raft, t time.Duration) raft.IndexFuture {
		return r.AddVoter(ServerID(cid), raft.ServerAddress(addr), 0, t)
	})
}

// DemoteVoter makes server cid a non-voter. Leader only.
func (n *Node) DemoteVoter(ctx context.Context, cid uint64) error {
	return n.configChange(ctx, func(r *raft.Raft, t time.Duration) raft.IndexFuture {
		return r.DemoteVoter(ServerID(cid), 0, t)
	})
}

// RemoveServer removes server cid from the Raft configuration. Leader only.
func (n *Node) RemoveServer(ctx context.Context, cid uint64) error {
	return n.configChange(ctx, func(r *raft.Raft, t time.Duration) raft.IndexFuture {
		return r.RemoveServer(ServerID(cid), 0, t)
	})
}

func (n *Node) configChange(ctx context.Context, op func(*raft.Raft, time.Duration) raft.IndexFuture) error {
	n.mu.Lock()
	in := n.run
	n.mu.Unlock()
	if in == nil {
		return ErrClosed
	}
	r := in.raft
	// raft admits a change once the last one counts as committed, the master's copy
	// counted before it is on disk (overlap.go): one change at a time, each proposed
	// only once the master's log is on its disk, so that two are never in flight
	// whatever the callers do.
	select {
	case n.confTurn <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("%w: another membership change of this node is in flight: %v", ErrTimeout, ctx.Err())
	}
	defer func() { <-n.confTurn }()
	if r.State() == raft.Leader {
		if err := in.logs.waitDurableCtx(ctx, r.LastIndex()); err != nil {
			return err
		}
	}
	f := op(r, timeoutFrom(ctx))
	if err := f.Error(); err != nil {
		return n.appendErr(err, f.Index())
	}
	return nil
}

// ServerID is the Raft server ID of the node with the given CID.
func ServerID(cid uint64) raft.ServerID { return membership.ServerID(cid) }

// TransferLeadership hands leadership to server cid at addr, which must be a voter, and
// returns once the transfer is done or has failed. Leader only.
func (n *Node) TransferLeadership(cid uint64, addr string) error {
	r := n.raftOrNil()
	if r == nil {
		return ErrClosed
	}
	if err := r.LeadershipTransferToServer(ServerID(cid), raft.ServerAddress(addr)).Error(); err != nil {
		mapped := n.mapErr(err)
		if mapped == err {
			// raft's own transfer timeout, or the target's TimeoutNow refused: no sentinel.
			return fmt.Errorf("%w: %v", ErrTransferFailed, err)
		}
		return mapped
	}
	return nil
}
