package daemon

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/cluster"
	"github.com/pmgcm/pmgcm/fsm"
	voterpolicy "github.com/pmgcm/pmgcm/membership"
	"github.com/pmgcm/pmgcm/raftnode"
)

// promote makes this node the master: with a live master by leadership transfer (making
// this node a voter first if it is not one); with the quorum lost, only with force, by
// forced recovery that starts a new epoch.
func (d *Daemon) promote(ctx context.Context, force bool) (*api.PromoteResponse, error) {
	if err := d.checkServing(); err != nil {
		return nil, err
	}
	cl := d.fsm.Cluster()
	if cl == nil {
		return nil, ErrNoCluster
	}
	me := d.self()
	if d.rn().IsLeader() {
		return &api.PromoteResponse{CID: me.CID, Name: me.Name, AlreadyMaster: true, Epoch: cl.Epoch}, nil
	}
	// An election may be under way, or Raft may still name a master that just died: give
	// it a moment before calling the quorum lost. Each transfer request is bounded: a hung
	// master (SIGSTOP) keeps a pooled connection open and never answers. Between attempts
	// it waits for Raft to see the leader change, not by polling.
	start := time.Now()
	deadline := start.Add(d.electionWait())
	// The search and the survivor check together stay within promoteSearchTimeout, so that
	// a forced promotion answers well within 20 s however the peers fail.
	sctx, cancel := context.WithTimeout(ctx, promoteSearchTimeout)
	defer cancel()
	asked := "" // the master last asked for a transfer
search:
	for {
		changed := d.rn().LeaderChanged()
		if d.rn().IsLeader() {
			if asked != "" {
				// The transfer went through (the master's answer was lost or late).
				d.logger.Info("promoted to master by leadership transfer", "previous-master-address", asked)
				return &api.PromoteResponse{CID: me.CID, Name: me.Name, Epoch: d.fsm.Cluster().Epoch}, nil
			}
			// Won an election meanwhile: this node is the master of the current epoch.
			return &api.PromoteResponse{CID: me.CID, Name: me.Name, AlreadyMaster: true, Epoch: d.fsm.Cluster().Epoch}, nil
		}
		if leader, err := d.leaderAddr(); err == nil && leader != d.cfg.Addr() {
			_, prevID := d.rn().Leader()
			asked = leader
			err := d.askTransfer(sctx, leader, me.CID)
			if err == nil {
				if err := d.waitSelfLeader(ctx); err != nil {
					return nil, err
				}
				d.logger.Info("promoted to master by leadership transfer", "previous-master-address", leader, "previous-master-cid", string(prevID))
				return &api.PromoteResponse{CID: me.CID, Name: me.Name, Epoch: d.fsm.Cluster().Epoch}, nil
			}
			var re *cluster.RemoteError
			if !errors.As(err, &re) || re.Code() != api.CodeUnreachable {
				return nil, err
			}
			d.logger.Warn("promote: the master did not answer the transfer request", "master-address", leader, "error", err)
		}
		wait := time.Until(deadline)
		if wait <= 0 {
			break
		}
		t := time.NewTimer(wait)
		select {
		case <-sctx.Done():
			t.Stop()
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			break search
		case <-changed:
		case <-t.C:
		}
		t.Stop()
	}
	if !force {
		return nil, fmt.Errorf("%w: no master, and this node cannot reach a quorum: %s. If the master and the other voters are lost for good, make this node the master with: pmgcm promote --force (the other members are then fenced until 'pmgcm sync --master_ip <this node's ip>' brings each back)",
			raftnode.ErrNoLeader, d.quorumSummary())
	}
	d.logger.Warn("promote --force: no master answered; checking the other members", "searched", time.Since(start).Round(time.Millisecond))
	if err := d.checkSurvivors(sctx); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	d.logger.Warn("promote --force: no reachable member objects", "elapsed", time.Since(start).Round(time.Millisecond))
	fenced, epoch, err := d.forceRecover(ctx, 0)
	if err != nil {
		return nil, err
	}
	d.logger.Warn("promote --force: done", "elapsed", time.Since(start).Round(time.Millisecond))
	return &api.PromoteResponse{CID: me.CID, Name: me.Name, Forced: true, Epoch: epoch, Fenced: fenced}, nil
}

// askTransfer asks the master at addr to hand leadership to cid, bounded by
// transferAttemptTimeout. It waits for the master's answer even when Raft sees the
// leader change meanwhile: the change may be the transfer itself, and a promotion that
// gave up on it could go on to force a recovery while the transfer completes.
func (d *Daemon) askTransfer(ctx context.Context, addr string, cid uint64) error {
	ctx, cancel := context.WithTimeout(ctx, transferAttemptTimeout)
	defer cancel()
	return d.peer.Transfer(ctx, addr, cid)
}

// promoteSearchTimeout bounds the part of a promotion that asks other nodes (the master
// for a transfer, the members for their logs) before it changes anything: a member
// that has not answered by then counts as down. The forced recovery after it is bounded
// by raftnode (Config.DialTimeout) and the new single voter's election.
const promoteSearchTimeout = 8 * time.Second

// transferAttemptTimeout bounds one leadership transfer request to the master, which
// answers once two configuration changes and raft's transfer (bounded by the election
// timeout) have run; a hung master (SIGSTOP) never answers.
const transferAttemptTimeout = 4 * time.Second

// electionWait is how long to wait for an election before deciding there is no quorum.
func (d *Daemon) electionWait() time.Duration {
	return 3*d.cfg.Raft.HeartbeatTimeout + 2*d.cfg.Raft.ElectionTimeout
}

func (d *Daemon) waitSelfLeader(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := d.rn().WaitLeader(ctx); err != nil {
		return fmt.Errorf("leadership did not move to this node: %w", err)
	}
	return nil
}

// checkSurvivors refuses a forced promotion when another reachable member has a longer
// log (it must be promoted instead, or its writes are lost) or still sees a master.
// Every member is asked at once; the refusal does not depend on which member answered
// first (survivorsVerdict).
func (d *Daemon) checkSurvivors(ctx context.Context) error {
	mine := d.rn().Stats()
	me := d.self()
	var (
		mu      sync.Mutex
		answers []survivor
		wg      sync.WaitGroup
	)
	for _, m := range d.activeMembers() {
		if m.CID == me.CID {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := d.remoteNode(ctx, m)
			mu.Lock()
			answers = append(answers, survivor{m: m, n: n})
			mu.Unlock()
		}()
	}
	wg.Wait()
	return survivorsVerdict(mine, answers)
}

// forceRecover makes this node the only voter (Raft RecoverCluster, offline) and commits
// a new epoch in which it is the only member of the current epoch: every other member is
// fenced, and removeCID (if not 0) is dropped. It returns the fenced CIDs and the epoch.
func (d *Daemon) forceRecover(ctx context.Context, removeCID uint64) ([]uint64, uint64, error) {
	d.memberMu.Lock()
	cl := d.fsm.Cluster()
	me := d.self()
	epoch := cl.Epoch + 1
	d.logger.Warn("forced promotion: making this node the only voter", "epoch", epoch, "remove-cid", removeCID)
	// Recorded first: until the epoch commits, this node talks to no peer, its voter duty
	// changes nothing (reconcileVoters), and a restart finishes the promotion
	// (finishPendingEpoch).
	me.PendingEpoch = epoch
	err := d.setSelf(me)
	// Not held across the recovery: it waits for a leader term that is ending, whose
	// voter duty may be waiting for memberMu.
	d.memberMu.Unlock()
	if err != nil {
		return nil, 0, err
	}
	if err := d.rn().ForceRecover(); err != nil {
		return nil, 0, d.raftOpenErr(err)
	}
	d.memberMu.Lock()
	defer d.memberMu.Unlock()
	return d.commitEpoch(ctx, epoch, removeCID)
}

// commitEpoch commits SetEpoch on this node, now the single voter, and clears the
// pending epoch.
func (d *Daemon) commitEpoch(ctx context.Context, epoch, removeCID uint64) ([]uint64, uint64, error) {
	if err := d.waitLeader(ctx); err != nil {
		return nil, 0, fmt.Errorf("the recovered node did not become master: %w", err)
	}
	me := d.self()
	if cl := d.fsm.Cluster(); cl.Epoch < epoch {
		var members []fsm.Member
		for _, m := range d.fsm.Members() {
			switch {
			case m.CID == removeCID:
				continue
			case m.CID == me.CID:
				m.Epoch, m.Suffrage = epoch, fsm.Voter
			default:
				m.Suffrage = fsm.Nonvoter
			}
			members = append(members, m)
		}
		if _, err := d.applyLocal(ctx, &fsm.SetEpoch{Epoch: epoch, Members: members}); err != nil {
			return nil, 0, fmt.Errorf("commit epoch %d: %w", epoch, err)
		}
	}
	me.PendingEpoch = 0
	if err := d.setSelf(me); err != nil {
		return nil, 0, err
	}
	d.refreshPeers()
	d.kickLeaderDuties()
	var fenced []uint64
	cl := d.fsm.Cluster()
	for _, m := range d.fsm.Members() {
		if m.Fenced(cl.Epoch) {
			fenced = append(fenced, m.CID)
		}
	}
	d.logger.Warn("forced promotion done: this node is master of a new epoch", "epoch", cl.Epoch, "fenced", fenced)
	return fenced, cl.Epoch, nil
}

// finishPendingEpoch completes a forced promotion that a crash interrupted.
func (d *Daemon) finishPendingEpoch() {
	defer d.bg.Done()
	epoch := d.self().PendingEpoch
	if epoch == 0 {
		return
	}
	ctx, cancel := d.stopContext()
	defer cancel()
	if _, _, err := d.commitEpoch(ctx, epoch, 0); err != nil && ctx.Err() == nil {
		d.logger.Error("cannot finish the forced promotion; restart pmgclusterd to retry", "epoch", epoch, "error", err)
	}
}

// transferTo makes member cid a voter if it is not one, keeping the voter policy by
// demoting another voter if the count would be even, then hands it leadership.
func (d *Daemon) transferTo(ctx context.Context, cid uint64) error {
	d.memberMu.Lock()
	defer d.memberMu.Unlock()
	n := d.rn()
	if !n.IsLeader() {
		return raftnode.ErrNotLeader
	}
	target, ok := d.fsm.Member(cid)
	if !ok || target.Fenced(d.fsm.Cluster().Epoch) {
		return fmt.Errorf("%w: cid %d is not an active member", fsm.ErrUnknownMember, cid)
	}
	// The target must be a voter: the voter policy with it kept promotes it if need be
	// and demotes another voter (the highest CID, never the leader) to keep the count odd.
	cfg, err := n.Configuration()
	if err != nil {
		return err
	}
	_, leaderID := n.Leader()
	leader, _ := voterpolicy.ParseServerID(leaderID)
	plan := voterpolicy.Plan(voterpolicy.Facts{Config: cfg, Members: d.activeMembers(), Leader: leader, Keep: []uint64{cid}})
	if err := d.carryOut(ctx, plan); err != nil {
		return fmt.Errorf("make cid %d a voter: %w", cid, err)
	}
	if err := n.TransferLeadership(cid, memberAddr(target)); err != nil {
		if errors.Is(err, raftnode.ErrNotLeader) {
			return err
		}
		return fmt.Errorf("leadership transfer to cid %d: %w", cid, err)
	}
	return nil
}
