package daemon

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/hashicorp/raft"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/cluster"
	"github.com/pmgcm/pmgcm/fsm"
	"github.com/pmgcm/pmgcm/raftnode"
)

// maxVoters is the most voters a cluster has; further nodes are non-voters.
const maxVoters = 5

// catchUpSlack is how far (in Raft entries) pmgcm status lets a node trail the master
// and still show it active rather than syncing: a busy cluster is never exactly level.
// The voter policy does not use it (see catchUpTargets).
const catchUpSlack = 64

// catchUpTargets holds, on the master, the index each non-voter must have applied before
// it is made a voter: the master's own applied index when it first saw the non-voter in
// this term. A fixed target and not a distance to the moving commit index: a node that
// has applied nothing yet is within any distance of a young cluster's commit index, and
// promoting it before the master can reach it costs the quorum (a 1-voter cluster that
// promotes an unreachable second voter steps down). Having applied the target means the
// node has received the log from this cluster, so it is both consistent and reachable.
// memberMu guards it.
type catchUpTargets struct {
	term    uint64
	targets map[uint64]uint64 // cid -> index
}

// ready reports whether non-voter cid, which has applied index applied, has reached its
// target; the first call in a term for a cid sets the target to leaderApplied.
func (c *catchUpTargets) ready(term, cid, applied, leaderApplied uint64) bool {
	if c.targets == nil || c.term != term {
		c.term, c.targets = term, map[uint64]uint64{}
	}
	target, ok := c.targets[cid]
	if !ok {
		target = leaderApplied
		c.targets[cid] = target
	}
	return applied >= target
}

// keep forgets the targets of every cid not in cids (promoted, deleted or fenced).
func (c *catchUpTargets) keep(cids []uint64) {
	for cid := range c.targets {
		if !slices.Contains(cids, cid) {
			delete(c.targets, cid)
		}
	}
}

// wantVoters is the voter policy (DESIGN safety rule 6): every node is a voter up to 5,
// and with 3 or more nodes the count is odd.
func wantVoters(nodes int) int {
	v := min(nodes, maxVoters)
	if v >= 3 && v%2 == 0 {
		v--
	}
	return v
}

// kickLeaderDuties asks the leader loop to run now instead of at its next tick.
func (d *Daemon) kickLeaderDuties() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// runLeaderDuties keeps, on the leader, the Raft configuration in line with the member
// list and the voter policy. (The standing check is standingWatch's.)
func (d *Daemon) runLeaderDuties() {
	defer d.bg.Done()
	ctx, cancel := d.stopContext()
	defer cancel()
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-d.kick:
		}
		if d.rn().IsLeader() && d.fsm.Cluster() != nil {
			if err := d.reconcileVoters(ctx); err != nil && ctx.Err() == nil {
				d.logger.Warn("voter reconciliation", "error", err)
			}
		}
	}
}

// reconcileVoters makes the Raft configuration match the members and the voter policy:
// members missing from Raft are added as non-voters, servers that are no longer members
// are removed, caught-up non-voters are promoted while voters are short, and surplus
// voters are demoted (never the leader).
func (d *Daemon) reconcileVoters(ctx context.Context) error {
	d.memberMu.Lock()
	defer d.memberMu.Unlock()
	n := d.rn()
	cfg, err := n.Configuration()
	if err != nil {
		return err
	}
	members := d.activeMembers()
	inRaft := map[raft.ServerID]raft.Server{}
	for _, s := range cfg.Servers {
		inRaft[s.ID] = s
	}
	isMember := map[raft.ServerID]bool{}
	for _, m := range members {
		id := raftnode.ServerID(m.CID)
		isMember[id] = true
		if _, ok := inRaft[id]; !ok {
			if err := n.AddNonvoter(ctx, m.CID, memberAddr(m)); err != nil {
				return fmt.Errorf("add cid %d (%s) as non-voter: %w", m.CID, memberAddr(m), err)
			}
			inRaft[id] = raft.Server{ID: id, Suffrage: raft.Nonvoter}
		}
	}
	for id := range inRaft {
		if !isMember[id] {
			if err := n.RemoveServer(ctx, parseCID(id)); err != nil {
				return fmt.Errorf("remove server cid %s (%s): %w", id, inRaft[id].Address, err)
			}
			delete(inRaft, id)
		}
	}
	_, leaderID := n.Leader()
	var voters, nonvoters []fsm.Member
	for _, m := range members {
		if inRaft[raftnode.ServerID(m.CID)].Suffrage == raft.Voter {
			voters = append(voters, m)
		} else {
			nonvoters = append(nonvoters, m)
		}
	}
	want := wantVoters(len(members))
	waiting := make([]uint64, 0, len(nonvoters))
	for _, m := range nonvoters {
		waiting = append(waiting, m.CID)
	}
	d.catchUp.keep(waiting)
	for len(voters) < want && len(nonvoters) > 0 {
		promoted := false
		for i, m := range nonvoters {
			if !d.caughtUp(ctx, m) {
				continue
			}
			if err := n.AddVoter(ctx, m.CID, memberAddr(m)); err != nil {
				return fmt.Errorf("promote cid %d (%s): %w", m.CID, memberAddr(m), err)
			}
			d.logger.Info("node promoted to voter", "cid", m.CID, "address", memberAddr(m))
			voters = append(voters, m)
			nonvoters = slices.Delete(nonvoters, i, i+1)
			promoted = true
			break
		}
		if !promoted {
			break
		}
	}
	for i := len(voters) - 1; len(voters) > want && i >= 0; i-- {
		m := voters[i]
		if raftnode.ServerID(m.CID) == leaderID {
			continue
		}
		if err := n.DemoteVoter(ctx, m.CID); err != nil {
			return fmt.Errorf("demote cid %d (%s): %w", m.CID, memberAddr(m), err)
		}
		d.logger.Info("node demoted to non-voter", "cid", m.CID, "address", memberAddr(m))
		voters = slices.Delete(voters, i, i+1)
	}
	// Record the Raft suffrage in the member list, so that every node shows it.
	for _, m := range members {
		s := fsm.Nonvoter
		for _, v := range voters {
			if v.CID == m.CID {
				s = fsm.Voter
			}
		}
		if m.Suffrage != s {
			if _, err := d.applyLocal(ctx, &fsm.SetSuffrage{CID: m.CID, Suffrage: s}); err != nil {
				return fmt.Errorf("record suffrage of cid %d: %w", m.CID, err)
			}
		}
	}
	return nil
}

// caughtUp reports whether non-voter m has applied the log up to its catch-up target (see
// catchUpTargets). The caller holds memberMu.
func (d *Daemon) caughtUp(ctx context.Context, m fsm.Member) bool {
	term, leaderApplied := d.rn().Stats().Term, d.fsm.AppliedIndex()
	ctx, cancel := context.WithTimeout(ctx, d.cfg.RPCTimeout)
	defer cancel()
	node, err := d.peer.Node(ctx, memberAddr(m))
	if err != nil {
		return false
	}
	return d.catchUp.ready(term, m.CID, node.AppliedIndex, leaderApplied)
}

func memberAddr(m fsm.Member) string {
	return fmt.Sprintf("%s:%d", m.IP, m.Port)
}

func parseCID(id raft.ServerID) uint64 {
	var cid uint64
	_, _ = fmt.Sscan(string(id), &cid)
	return cid
}

// deleteMember removes node cid from the cluster, on the master or forwarded to it.
// With force and no master (a 2-node cluster whose peer died), this node removes it by
// forced recovery, as a forced promote does.
func (d *Daemon) deleteMember(ctx context.Context, cid uint64, force bool) (*api.DeleteResponse, error) {
	if err := d.checkServing(); err != nil {
		return nil, err
	}
	if d.fsm.Cluster() == nil {
		return nil, ErrNoCluster
	}
	m, ok := d.fsm.Member(cid)
	if !ok {
		return nil, fmt.Errorf("%w: no node has cid %d", fsm.ErrUnknownMember, cid)
	}
	return cluster.OnMaster(ctx, d.fwd, func() (*api.DeleteResponse, error) { return d.deleteHere(ctx, cid) },
		func() (*api.DeleteResponse, error) {
			wctx, cancel := context.WithTimeout(ctx, d.electionWait())
			var out api.DeleteResponse
			err := d.fwd.CallLeader(wctx, false, func(ctx context.Context, addr string) (err error) {
				out, err = d.peer.Delete(ctx, addr, cid)
				return err
			})
			cancel()
			switch {
			case err == nil:
				if !out.TokenRotated {
					// A master of the first release removes without rotating the token.
					out.TokenRotated = d.rotateForwarded(ctx, cid)
				}
				return &out, nil
			case errors.Is(err, raftnode.ErrNoLeader) && force:
				return d.forceDelete(ctx, m)
			case errors.Is(err, raftnode.ErrNoLeader):
				return nil, fmt.Errorf("%w; if cid %d is dead and it was the quorum's missing voter, remove it with: pmgcm delete --force %d", err, cid, cid)
			}
			return nil, err
		})
}

// deleteHere removes node cid from the cluster on this node, the master.
func (d *Daemon) deleteHere(ctx context.Context, cid uint64) (*api.DeleteResponse, error) {
	d.memberMu.Lock()
	defer d.memberMu.Unlock()
	m, ok := d.fsm.Member(cid)
	if !ok {
		return nil, fmt.Errorf("%w: no node has cid %d", fsm.ErrUnknownMember, cid)
	}
	if m.CID == d.self().CID {
		return nil, fmt.Errorf("%w: cid %d (%s) is the master and cannot delete itself: make another node master first (pmgcm promote on it), then delete cid %d there",
			ErrNotMaster, cid, m.Name, cid)
	}
	// Membership first: from this commit on, every member refuses the node's certificate.
	if _, err := d.applyLocal(ctx, &fsm.RemoveMember{CID: cid}); err != nil {
		return nil, cluster.FirstProposal(err)
	}
	if err := d.rn().RemoveServer(ctx, cid); err != nil {
		// The member is gone; reconcileVoters removes the server on its next pass.
		d.logger.Warn("remove server from raft", "cid", cid, "error", err)
	}
	d.logger.Info("node deleted", "cid", cid, "name", m.Name, "address", memberAddr(m))
	rotated := d.rotateAfterDelete(ctx, cid)
	d.kickLeaderDuties()
	return &api.DeleteResponse{CID: cid, Name: m.Name, IP: m.IP, TokenRotated: rotated}, nil
}

// forceDelete removes member m from a cluster without a master by forced recovery of
// this node: a new epoch without m, the other members fenced.
func (d *Daemon) forceDelete(ctx context.Context, m fsm.Member) (*api.DeleteResponse, error) {
	me := d.self()
	if m.CID == me.CID {
		return nil, fmt.Errorf("%w: cid %d is this node", ErrNotMaster, m.CID)
	}
	if err := d.checkSurvivors(ctx); err != nil {
		return nil, err
	}
	if _, _, err := d.forceRecover(ctx, m.CID); err != nil {
		return nil, err
	}
	d.logger.Warn("node deleted by forced recovery", "cid", m.CID, "name", m.Name)
	d.memberMu.Lock()
	rotated := d.rotateAfterDelete(ctx, m.CID)
	d.memberMu.Unlock()
	return &api.DeleteResponse{CID: m.CID, Name: m.Name, IP: m.IP, TokenRotated: rotated}, nil
}
