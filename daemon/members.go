package daemon

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/cluster"
	"github.com/pmgcm/pmgcm/fsm"
	voterpolicy "github.com/pmgcm/pmgcm/membership"
	"github.com/pmgcm/pmgcm/raftnode"
)

// catchUpSlack is how far (in Raft entries) pmgcm status lets a node trail the master
// and still show it active rather than syncing: a busy cluster is never exactly level.
// The voter policy does not use it (see voterpolicy.Targets).
const catchUpSlack = 64

// kickLeaderDuties asks the master's voter duty to reconcile now instead of at its next
// re-check.
func (d *Daemon) kickLeaderDuties() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// voterRecheck is how often the voter duty looks again while nothing kicks it: a
// non-voter's progress towards its catch-up target is learnt only by asking it.
const voterRecheck = 500 * time.Millisecond

// voterDuty is the master's leader duty (registered with raftnode.Node.OnLeader): for
// as long as this node's leadership term lasts it keeps the Raft configuration in line
// with the member list and the voter policy (reconcileVoters). raftnode starts it in
// each term and ends ctx with the term: nothing here asks whether this node leads.
func (d *Daemon) voterDuty(ctx context.Context) {
	tick := time.NewTicker(voterRecheck)
	defer tick.Stop()
	for {
		if d.fsm.Cluster() != nil {
			if err := d.reconcileVoters(ctx); err != nil && ctx.Err() == nil {
				d.logger.Warn("voter reconciliation", "error", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-d.kick:
		}
	}
}

func memberAddr(m fsm.Member) string { return voterpolicy.Address(m) }

func parseCID(id raft.ServerID) uint64 {
	cid, _ := voterpolicy.ParseServerID(id)
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
