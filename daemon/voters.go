package daemon

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pmgcm/pmgcm/cluster"
	"github.com/pmgcm/pmgcm/fsm"
	voterpolicy "github.com/pmgcm/pmgcm/membership"
	"github.com/pmgcm/pmgcm/raftnode"
)

// voterReconciler owns the Raft configuration on the master: it makes it match the
// members and the voter policy (voterpolicy.Plan), from the catch-up facts it gathers,
// and carries out voter plans (for a leadership transfer too).
type voterReconciler struct {
	fsm    *fsm.FSM
	logger hclog.Logger
	// raft is this node's Raft node (Daemon.rn; made after the reconciler).
	raft func() *raftnode.Node
	// peer is the cluster RPC client (made by openRPC).
	peer       func() *cluster.Client
	rpcTimeout time.Duration
	// turn serializes membership changes on the master (Daemon.memberTurn).
	turn *memberTurn
	// catchUp is what non-voters must apply before the voter policy promotes them.
	catchUp *voterpolicy.Targets
	// self is this node's identity file (its pending epoch).
	self func() nodeFile
	// members returns the members of the current epoch (memberView.active).
	members func() []fsm.Member
	// apply commits a command on this node, the master (writer.applyLocal).
	apply func(context.Context, fsm.Command) (*fsm.Result, error)
	// kicks wakes the voter duty (Daemon.kick).
	kicks chan struct{}
}

// newVoterReconciler returns the voter reconciler of d, whose fsm is made.
func newVoterReconciler(d *Daemon) *voterReconciler {
	return &voterReconciler{
		fsm: d.fsm, logger: d.logger, raft: d.rn, peer: func() *cluster.Client { return d.peer },
		rpcTimeout: d.cfg.RPCTimeout, turn: &d.memberTurn, catchUp: &d.catchUp, self: d.self,
		members: d.members.active, apply: d.writes.applyLocal, kicks: d.kick,
	}
}

// kick asks the master's voter duty to reconcile now instead of at its next re-check.
func (v *voterReconciler) kick() {
	select {
	case v.kicks <- struct{}{}:
	default:
	}
}

// voterRecheck is how often the voter duty looks again while nothing kicks it: a
// non-voter's progress towards its catch-up target is learnt only by asking it.
const voterRecheck = 500 * time.Millisecond

// duty is the master's leader duty (registered with raftnode.Node.OnLeader): for as long
// as this node's leadership term lasts it keeps the Raft configuration in line with the
// member list and the voter policy (reconcile). raftnode starts it in each term and ends
// ctx with the term: nothing here asks whether this node leads.
func (v *voterReconciler) duty(ctx context.Context) {
	tick := time.NewTicker(voterRecheck)
	defer tick.Stop()
	for {
		if v.fsm.Cluster() != nil {
			if err := v.reconcile(ctx); err != nil && ctx.Err() == nil {
				v.logger.Warn("voter reconciliation", "error", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-v.kicks:
		}
	}
}

// reconcile makes the Raft configuration match the members and the voter policy
// (voterpolicy.Plan). The catch-up facts are gathered first, one RPC per waiting non-voter,
// with no lock held; the plan is then made and carried out in the membership turn (memberTurn), from the
// configuration and members as they are then.
func (v *voterReconciler) reconcile(ctx context.Context) error {
	n := v.raft()
	cfg, err := n.Configuration()
	if err != nil {
		return err
	}
	term, leaderApplied := n.Stats().Term, v.fsm.AppliedIndex()
	waiting := voterpolicy.Waiting(cfg, v.members())
	applied := v.appliedIndexes(ctx, waiting)

	release, err := v.turn.take(ctx)
	if err != nil {
		return err
	}
	defer release()
	if v.self().PendingEpoch != 0 {
		// A forced promotion is under way: the member list changes with its epoch.
		return nil
	}
	if cfg, err = n.Configuration(); err != nil {
		return err
	}
	v.catchUp.Keep(waiting)
	caught := map[uint64]bool{}
	for cid, idx := range applied {
		caught[cid] = v.catchUp.Ready(term, cid, idx, leaderApplied)
	}
	_, leaderID := n.Leader()
	leader, _ := voterpolicy.ParseServerID(leaderID)
	plan := voterpolicy.Plan(voterpolicy.Facts{Config: cfg, Members: v.members(), Leader: leader, CaughtUp: caught})
	return v.carryOut(ctx, plan)
}

// appliedIndexes asks each member of cids, at once, how far it has applied; a member that
// does not answer within RPCTimeout is left out. The caller holds no lock.
func (v *voterReconciler) appliedIndexes(ctx context.Context, cids []uint64) map[uint64]uint64 {
	out := map[uint64]uint64{}
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	for _, cid := range cids {
		m, ok := v.fsm.Member(cid)
		if !ok {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, v.rpcTimeout)
			defer cancel()
			node, err := v.peer().Node(cctx, memberAddr(m))
			if err != nil {
				return
			}
			mu.Lock()
			out[cid] = node.AppliedIndex
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

// carryOut makes the changes of a voter plan, in order, on this node (the leader). The
// caller has the membership turn.
func (v *voterReconciler) carryOut(ctx context.Context, plan []voterpolicy.Change) error {
	n := v.raft()
	for _, c := range plan {
		var err error
		switch c.Op {
		case voterpolicy.AddNonvoter:
			err = n.AddNonvoter(ctx, c.CID, c.Address)
		case voterpolicy.Remove:
			if c.CID == 0 {
				v.logger.Warn("raft server is no member and its ID is no CID; leaving it", "id", c.ID, "address", c.Address)
				continue
			}
			err = n.RemoveServer(ctx, c.CID)
		case voterpolicy.Promote:
			if err = n.AddVoter(ctx, c.CID, c.Address); err == nil {
				v.logger.Info("node promoted to voter", "cid", c.CID, "address", c.Address)
			}
		case voterpolicy.Demote:
			if err = n.DemoteVoter(ctx, c.CID); err == nil {
				v.logger.Info("node demoted to non-voter", "cid", c.CID, "address", c.Address)
			}
		case voterpolicy.Record:
			// The Raft suffrage in the member list, so that every node shows it.
			_, err = v.apply(ctx, &fsm.SetSuffrage{CID: c.CID, Suffrage: c.Suffrage})
		}
		if err != nil {
			return fmt.Errorf("%s cid %d (%s): %w", c.Op, c.CID, c.Address, err)
		}
	}
	return nil
}
