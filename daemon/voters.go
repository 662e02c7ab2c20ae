package daemon

import (
	"context"
	"fmt"
	"sync"

	"github.com/pmgcm/pmgcm/fsm"
	voterpolicy "github.com/pmgcm/pmgcm/membership"
)

// reconcileVoters makes the Raft configuration match the members and the voter policy
// (voterpolicy.Plan). The catch-up facts are gathered first, one RPC per waiting non-voter,
// with no lock held; the plan is then made and carried out under memberMu from the
// configuration and members as they are then.
func (d *Daemon) reconcileVoters(ctx context.Context) error {
	n := d.rn()
	cfg, err := n.Configuration()
	if err != nil {
		return err
	}
	term, leaderApplied := n.Stats().Term, d.fsm.AppliedIndex()
	waiting := voterpolicy.Waiting(cfg, d.activeMembers())
	applied := d.appliedIndexes(ctx, waiting)

	d.memberMu.Lock()
	defer d.memberMu.Unlock()
	if d.self().PendingEpoch != 0 {
		// A forced promotion is under way: the member list changes with its epoch.
		return nil
	}
	if cfg, err = n.Configuration(); err != nil {
		return err
	}
	d.catchUp.Keep(waiting)
	caught := map[uint64]bool{}
	for cid, idx := range applied {
		caught[cid] = d.catchUp.Ready(term, cid, idx, leaderApplied)
	}
	_, leaderID := n.Leader()
	leader, _ := voterpolicy.ParseServerID(leaderID)
	plan := voterpolicy.Plan(voterpolicy.Facts{Config: cfg, Members: d.activeMembers(), Leader: leader, CaughtUp: caught})
	return d.carryOut(ctx, plan)
}

// appliedIndexes asks each member of cids, at once, how far it has applied; a member that
// does not answer within RPCTimeout is left out. The caller holds no lock.
func (d *Daemon) appliedIndexes(ctx context.Context, cids []uint64) map[uint64]uint64 {
	out := map[uint64]uint64{}
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	for _, cid := range cids {
		m, ok := d.fsm.Member(cid)
		if !ok {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, d.cfg.RPCTimeout)
			defer cancel()
			node, err := d.peer.Node(cctx, memberAddr(m))
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
// caller holds memberMu.
func (d *Daemon) carryOut(ctx context.Context, plan []voterpolicy.Change) error {
	n := d.rn()
	for _, c := range plan {
		var err error
		switch c.Op {
		case voterpolicy.AddNonvoter:
			err = n.AddNonvoter(ctx, c.CID, c.Address)
		case voterpolicy.Remove:
			if c.CID == 0 {
				d.logger.Warn("raft server is no member and its ID is no CID; leaving it", "id", c.ID, "address", c.Address)
				continue
			}
			err = n.RemoveServer(ctx, c.CID)
		case voterpolicy.Promote:
			if err = n.AddVoter(ctx, c.CID, c.Address); err == nil {
				d.logger.Info("node promoted to voter", "cid", c.CID, "address", c.Address)
			}
		case voterpolicy.Demote:
			if err = n.DemoteVoter(ctx, c.CID); err == nil {
				d.logger.Info("node demoted to non-voter", "cid", c.CID, "address", c.Address)
			}
		case voterpolicy.Record:
			// The Raft suffrage in the member list, so that every node shows it.
			_, err = d.applyLocal(ctx, &fsm.SetSuffrage{CID: c.CID, Suffrage: c.Suffrage})
		}
		if err != nil {
			return fmt.Errorf("%s cid %d (%s): %w", c.Op, c.CID, c.Address, err)
		}
	}
	return nil
}
