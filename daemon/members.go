package daemon

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/go-hclog"
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

func memberAddr(m fsm.Member) string { return voterpolicy.Address(m) }

func parseCID(id raft.ServerID) uint64 {
	cid, _ := voterpolicy.ParseServerID(id)
	return cid
}

// memberOps owns pmgcm delete: removing a member on the master, forwarding the delete to
// it, and, with --force and no master, removing it by forced recovery; the join token is
// rotated after each.
type memberOps struct {
	// writes commits commands and reads linearizably (rpc.go).
	writes *writer
	fsm    *fsm.FSM
	logger hclog.Logger
	// peer and fwd are the cluster RPC client and the forwarder (made by openRPC).
	peer func() *cluster.Client
	fwd  func() *cluster.Forwarder
	// turn serializes membership changes on the master (Daemon.memberTurn).
	turn     *memberTurn
	tokens   *tokenKeeper
	promoter *promoter
	voters   *voterReconciler
	// raft is this node's Raft node (Daemon.rn; made after memberOps).
	raft         func() *raftnode.Node
	self         func() nodeFile
	electionWait time.Duration
	// host is what a delete needs of the rest of the daemon.
	host memberOpsHost
}

// memberOpsHost is what a delete needs of the daemon.
type memberOpsHost interface {
	checkServing() error
}

// newMemberOps returns the delete of d, whose fsm, token keeper, promoter and voter
// reconciler are made.
func newMemberOps(d *Daemon) *memberOps {
	return &memberOps{
		writes: d.writes, fsm: d.fsm, logger: d.logger, peer: func() *cluster.Client { return d.peer }, fwd: func() *cluster.Forwarder { return d.fwd },
		turn: &d.memberTurn, tokens: d.tokens, promoter: d.promoter, voters: d.voters, raft: d.rn, self: d.self,
		electionWait: electionWait(d.cfg.Raft), host: d,
	}
}

// deleteMember removes node cid from the cluster, on the master or forwarded to it.
// With force and no master (a 2-node cluster whose peer died), this node removes it by
// forced recovery, as a forced promote does.
func (o *memberOps) deleteMember(ctx context.Context, cid uint64, force bool) (*api.DeleteResponse, error) {
	if err := o.host.checkServing(); err != nil {
		return nil, err
	}
	if o.fsm.Cluster() == nil {
		return nil, ErrNoCluster
	}
	m, ok := o.fsm.Member(cid)
	if !ok {
		return nil, fmt.Errorf("%w: no node has cid %d", fsm.ErrUnknownMember, cid)
	}
	return cluster.OnMaster(ctx, o.fwd(), func() (*api.DeleteResponse, error) { return o.deleteHere(ctx, cid) },
		func() (*api.DeleteResponse, error) {
			wctx, cancel := context.WithTimeout(ctx, o.electionWait)
			var out api.DeleteResponse
			err := o.fwd().CallLeader(wctx, false, func(ctx context.Context, addr string) (err error) {
				out, err = o.peer().Delete(ctx, addr, cid)
				return err
			})
			cancel()
			switch {
			case err == nil:
				if !out.TokenRotated {
					// A master of the first release removes without rotating the token.
					out.TokenRotated = o.tokens.rotateForwarded(ctx, cid)
				}
				return &out, nil
			case errors.Is(err, raftnode.ErrNoLeader) && force:
				return o.forceDelete(ctx, m)
			case errors.Is(err, raftnode.ErrNoLeader):
				return nil, fmt.Errorf("%w; if cid %d is dead and it was the quorum's missing voter, remove it with: pmgcm delete --force %d", err, cid, cid)
			}
			return nil, err
		})
}

// deleteHere removes node cid from the cluster on this node, the master.
func (o *memberOps) deleteHere(ctx context.Context, cid uint64) (*api.DeleteResponse, error) {
	release, err := o.turn.take(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	m, ok := o.fsm.Member(cid)
	if !ok {
		return nil, fmt.Errorf("%w: no node has cid %d", fsm.ErrUnknownMember, cid)
	}
	if m.CID == o.self().CID {
		return nil, fmt.Errorf("%w: cid %d (%s) is the master and cannot delete itself: make another node master first (pmgcm promote on it), then delete cid %d there",
			ErrNotMaster, cid, m.Name, cid)
	}
	// Membership first: from this commit on, every member refuses the node's certificate.
	if _, err := o.writes.applyLocal(ctx, &fsm.RemoveMember{CID: cid}); err != nil {
		return nil, cluster.FirstProposal(err)
	}
	if err := o.raft().RemoveServer(ctx, cid); err != nil {
		// The member is gone; reconcileVoters removes the server on its next pass.
		o.logger.Warn("remove server from raft", "cid", cid, "error", err)
	}
	o.logger.Info("node deleted", "cid", cid, "name", m.Name, "address", memberAddr(m))
	rotated := o.tokens.rotateAfterDelete(ctx, cid)
	o.voters.kick()
	return &api.DeleteResponse{CID: cid, Name: m.Name, IP: m.IP, TokenRotated: rotated}, nil
}

// forceDelete removes member m from a cluster without a master by forced recovery of
// this node: a new epoch without m, the other members fenced.
func (o *memberOps) forceDelete(ctx context.Context, m fsm.Member) (*api.DeleteResponse, error) {
	me := o.self()
	if m.CID == me.CID {
		return nil, fmt.Errorf("%w: cid %d is this node", ErrNotMaster, m.CID)
	}
	if err := o.promoter.checkSurvivors(ctx); err != nil {
		return nil, err
	}
	if _, _, err := o.promoter.forceRecover(ctx, m.CID); err != nil {
		return nil, err
	}
	o.logger.Warn("node deleted by forced recovery", "cid", m.CID, "name", m.Name)
	rotated := false
	if release, err := o.turn.take(ctx); err != nil {
		o.logger.Warn("join token not rotated after a delete: run pmgcm join-cmd --rotate", "cid", m.CID, "error", err)
	} else {
		rotated = o.tokens.rotateAfterDelete(ctx, m.CID)
		release()
	}
	return &api.DeleteResponse{CID: m.CID, Name: m.Name, IP: m.IP, TokenRotated: rotated}, nil
}
