package daemon

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/cluster"
	"github.com/pmgcm/pmgcm/fsm"
	voterpolicy "github.com/pmgcm/pmgcm/membership"
	"github.com/pmgcm/pmgcm/raftnode"
)

// promoter owns making this node the master (pmgcm promote): by leadership transfer
// from a live master, or, with the quorum lost, by forced recovery into a new epoch
// after asking the surviving members (survivors.go); it also hands leadership to
// another member on request and finishes a forced promotion a crash interrupted.
type promoter struct {
	// stat is this node's view of the cluster (status.go).
	stat *statusReporter
	// writes commits commands and reads linearizably (rpc.go).
	writes *writer
	fsm    *fsm.FSM
	logger hclog.Logger
	// host is what promotion needs of the rest of the daemon.
	host promoteHost
	// members lists the members of the current epoch.
	members *memberView
	// raft is this node's Raft node (Daemon.rn; made after the promoter).
	raft func() *raftnode.Node
	// peer is the cluster RPC client (made by openRPC).
	peer func() *cluster.Client
	// transfer asks the master at addr to hand leadership to cid (askTransfer; a test
	// answers in its place).
	transfer func(ctx context.Context, addr string, cid uint64) error
	// voters carries out voter plans (a transfer target is made a voter first).
	voters *voterReconciler
	// self is this node's identity file.
	self func() nodeFile
	// addr is this node's cluster address.
	addr         string
	electionWait time.Duration
	// turn serializes membership changes on the master (Daemon.memberTurn).
	turn *memberTurn
	// bg and stopContext are the daemon's background tasks and their context.
	bg          *sync.WaitGroup
	stopContext func() (context.Context, context.CancelFunc)
	// trust is the peer cache, stored as soon as the new epoch is applied.
	trust *peerTrust
	// maint refuses a promotion while this node is in maintenance.
	maint *maintenance
}

// promoteHost is what promotion needs of the daemon.
type promoteHost interface {
	checkServing() error
	setSelf(nf nodeFile) error
	raftOpenErr(err error) error
}

// newPromoter returns the promoter of d, whose fsm and voter reconciler are made.
func newPromoter(d *Daemon) *promoter {
	p := &promoter{
		writes: d.writes, fsm: d.fsm, logger: d.logger, stat: d.stat, host: d, members: d.members, raft: d.rn,
		peer: func() *cluster.Client { return d.peer }, voters: d.voters, self: d.self, addr: d.cfg.Addr(), electionWait: electionWait(d.cfg.Raft),
		turn: &d.memberTurn, bg: &d.bg, stopContext: d.stopContext, trust: d.trust, maint: d.maint,
	}
	p.transfer = p.askTransfer
	return p
}

// promote makes this node the master: with a live master by leadership transfer (making
// this node a voter first if it is not one); with the quorum lost, only with force, by
// forced recovery that starts a new epoch.
func (p *promoter) promote(ctx context.Context, force bool) (*api.PromoteResponse, error) {
	if err := p.host.checkServing(); err != nil {
		return nil, err
	}
	if err := p.maint.refuseInMaintenance("pmgcm promote"); err != nil {
		return nil, err
	}
	cl := p.fsm.Cluster()
	if cl == nil {
		return nil, ErrNoCluster
	}
	me := p.self()
	if p.raft().IsLeader() {
		return &api.PromoteResponse{CID: me.CID, Name: me.Name, AlreadyMaster: true, Epoch: cl.Epoch}, nil
	}
	// An election may be under way, or Raft may still name a master that just died: give
	// it a moment before calling the quorum lost. Each transfer request is bounded: a hung
	// master (SIGSTOP) keeps a pooled connection open and never answers. Between attempts
	// it waits for Raft to see the leader change, not by polling.
	start := time.Now()
	deadline := start.Add(p.electionWait)
	// The search and the survivor check together stay within promoteSearchTimeout, so that
	// a forced promotion answers well within 20 s however the peers fail.
	sctx, cancel := context.WithTimeout(ctx, promoteSearchTimeout)
	defer cancel()
	asked := ""              // the master last asked for a transfer
	var transferFailed error // the last transfer that did not complete, asked again until retryUntil
	var retryUntil time.Time
search:
	for {
		changed := p.raft().LeaderChanged()
		if p.raft().IsLeader() {
			if asked != "" {
				// The transfer went through (the master's answer was lost or late).
				p.logger.Info("promoted to master by leadership transfer", "previous-master-address", asked)
				return &api.PromoteResponse{CID: me.CID, Name: me.Name, Epoch: p.fsm.Cluster().Epoch}, nil
			}
			// Won an election meanwhile: this node is the master of the current epoch.
			return &api.PromoteResponse{CID: me.CID, Name: me.Name, AlreadyMaster: true, Epoch: p.fsm.Cluster().Epoch}, nil
		}
		if leader, err := p.writes.leaderAddr(); err == nil && leader != p.addr {
			_, prevID := p.raft().Leader()
			asked = leader
			err := p.transfer(sctx, leader, me.CID)
			if err == nil {
				if err := p.waitSelfLeader(ctx); err != nil {
					return nil, err
				}
				p.logger.Info("promoted to master by leadership transfer", "previous-master-address", leader, "previous-master-cid", string(prevID))
				return &api.PromoteResponse{CID: me.CID, Name: me.Name, Epoch: p.fsm.Cluster().Epoch}, nil
			}
			var re *cluster.RemoteError
			if !errors.As(err, &re) {
				return nil, err
			}
			switch re.Code() {
			case api.CodeUnreachable:
				p.logger.Warn("promote: the master did not answer the transfer request", "master-address", leader, "error", err)
			case api.CodeUnavailable, api.CodeNotLeader:
				// The transfer did not complete (this node did not win in time, or the master
				// changed meanwhile): nothing changed, so ask the master of the moment again
				// while the search lasts, once Raft has seen a leader change or after an
				// election's time.
				if transferFailed != nil && time.Now().After(retryUntil) {
					return nil, err
				}
				if transferFailed == nil {
					retryUntil = time.Now().Add(promoteSearchTimeout / 2)
				}
				transferFailed = err
				p.logger.Warn("promote: the transfer did not complete; asking again", "master-address", leader, "error", err)
				deadline = time.Now().Add(p.electionWait)
			default:
				return nil, err
			}
		}
		wait := time.Until(deadline)
		if wait <= 0 {
			if transferFailed != nil {
				return nil, transferFailed
			}
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
			raftnode.ErrNoLeader, p.stat.quorumSummary())
	}
	p.logger.Warn("promote --force: no master answered; checking the other members", "searched", time.Since(start).Round(time.Millisecond))
	if err := p.checkSurvivors(sctx); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p.logger.Warn("promote --force: no reachable member objects", "elapsed", time.Since(start).Round(time.Millisecond))
	fenced, epoch, err := p.forceRecover(ctx, 0)
	if err != nil {
		return nil, err
	}
	p.logger.Warn("promote --force: done", "elapsed", time.Since(start).Round(time.Millisecond))
	return &api.PromoteResponse{CID: me.CID, Name: me.Name, Forced: true, Epoch: epoch, Fenced: fenced}, nil
}

// askTransfer asks the master at addr to hand leadership to cid, bounded by
// transferAttemptTimeout. It waits for the master's answer even when Raft sees the
// leader change meanwhile: the change may be the transfer itself, and a promotion that
// gave up on it could go on to force a recovery while the transfer completes.
func (p *promoter) askTransfer(ctx context.Context, addr string, cid uint64) error {
	ctx, cancel := context.WithTimeout(ctx, transferAttemptTimeout)
	defer cancel()
	return p.peer().Transfer(ctx, addr, cid)
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

// electionWait is how long to wait for an election, with Raft timers rc, before deciding
// there is no quorum.
func electionWait(rc raftnode.Config) time.Duration {
	return 3*rc.HeartbeatTimeout + 2*rc.ElectionTimeout
}

func (p *promoter) waitSelfLeader(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := p.raft().WaitLeader(ctx); err != nil {
		return fmt.Errorf("leadership did not move to this node: %w", err)
	}
	return nil
}

// checkSurvivors refuses a forced promotion when another reachable member has a longer
// log (it must be promoted instead, or its writes are lost) or still sees a master.
// Every member is asked at once; the refusal does not depend on which member answered
// first (survivorsVerdict).
func (p *promoter) checkSurvivors(ctx context.Context) error {
	mine := p.raft().Stats()
	me := p.self()
	var (
		mu      sync.Mutex
		answers []survivor
		wg      sync.WaitGroup
	)
	for _, m := range p.members.active() {
		if m.CID == me.CID {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := p.stat.remoteNode(ctx, m)
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
func (p *promoter) forceRecover(ctx context.Context, removeCID uint64) ([]uint64, uint64, error) {
	release, err := p.turn.take(ctx)
	if err != nil {
		return nil, 0, err
	}
	cl := p.fsm.Cluster()
	me := p.self()
	epoch := cl.Epoch + 1
	p.logger.Warn("forced promotion: making this node the only voter", "epoch", epoch, "remove-cid", removeCID)
	// Recorded first: until the epoch commits, this node talks to no peer, its voter duty
	// changes nothing (voterReconciler.reconcile), and a restart finishes the promotion
	// (finishPendingEpoch).
	me.PendingEpoch = epoch
	err = p.host.setSelf(me)
	// Not held across the recovery: it waits for a leader term that is ending, whose
	// voter duty may have the turn.
	release()
	if err != nil {
		return nil, 0, err
	}
	if err := p.raft().ForceRecover(); err != nil {
		return nil, 0, p.host.raftOpenErr(err)
	}
	if release, err = p.turn.take(ctx); err != nil {
		// Not the turn's ErrBusy, "nothing was changed: try again": this node is the only
		// voter by now, and the pending epoch stays recorded for the restart.
		return nil, 0, fmt.Errorf("%w: forced promotion to epoch %d: this node is now the only voter, but another membership change kept the turn until the deadline (%w), so the new epoch is not committed yet; it is finished when pmgclusterd restarts",
			ErrPromotionPending, epoch, context.Cause(ctx))
	}
	defer release()
	return p.commitEpoch(ctx, epoch, removeCID)
}

// commitEpoch commits SetEpoch on this node, now the single voter, and clears the
// pending epoch.
func (p *promoter) commitEpoch(ctx context.Context, epoch, removeCID uint64) ([]uint64, uint64, error) {
	if err := waitLeader(ctx, p.raft()); err != nil {
		return nil, 0, fmt.Errorf("the recovered node did not become master: %w", err)
	}
	me := p.self()
	if cl := p.fsm.Cluster(); cl.Epoch < epoch {
		var members []fsm.Member
		for _, m := range p.fsm.Members() {
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
		if _, err := p.writes.applyLocal(ctx, &fsm.SetEpoch{Epoch: epoch, Members: members}); err != nil {
			return nil, 0, fmt.Errorf("commit epoch %d: %w", epoch, err)
		}
	}
	me.PendingEpoch = 0
	if err := p.host.setSelf(me); err != nil {
		return nil, 0, err
	}
	p.trust.refresh()
	p.voters.kick()
	var fenced []uint64
	cl := p.fsm.Cluster()
	for _, m := range p.fsm.Members() {
		if m.Fenced(cl.Epoch) {
			fenced = append(fenced, m.CID)
		}
	}
	p.logger.Warn("forced promotion done: this node is master of a new epoch", "epoch", cl.Epoch, "fenced", fenced)
	return fenced, cl.Epoch, nil
}

// finishPendingEpoch completes a forced promotion that a crash interrupted.
func (p *promoter) finishPendingEpoch() {
	defer p.bg.Done()
	epoch := p.self().PendingEpoch
	if epoch == 0 {
		return
	}
	ctx, cancel := p.stopContext()
	defer cancel()
	// In turn with the other membership changes, as forceRecover commits it.
	release, err := p.turn.take(ctx)
	if err != nil {
		return // stopping
	}
	defer release()
	if _, _, err := p.commitEpoch(ctx, epoch, 0); err != nil && ctx.Err() == nil {
		p.logger.Error("cannot finish the forced promotion; restart pmgclusterd to retry", "epoch", epoch, "error", err)
	}
}

// transferTo makes member cid a voter if it is not one, keeping the voter policy by
// demoting another voter if the count would be even, then hands it leadership.
func (p *promoter) transferTo(ctx context.Context, cid uint64) error {
	release, err := p.turn.take(ctx)
	if err != nil {
		return err
	}
	defer release()
	n := p.raft()
	if !n.IsLeader() {
		return raftnode.ErrNotLeader
	}
	target, ok := p.fsm.Member(cid)
	if !ok || target.Fenced(p.fsm.Cluster().Epoch) {
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
	plan := voterpolicy.Plan(voterpolicy.Facts{Config: cfg, Members: p.members.active(), Leader: leader, Keep: []uint64{cid}})
	if err := p.voters.carryOut(ctx, plan); err != nil {
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
