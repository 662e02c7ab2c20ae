package daemon

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/cluster"
	"github.com/pmgcm/pmgcm/fsm"
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
	// it a moment before calling the quorum lost.
	deadline := time.Now().Add(d.electionWait())
	for {
		if leader, err := d.leaderAddr(); err == nil {
			_, prevID := d.rn().Leader()
			err := d.peer.Transfer(ctx, leader, me.CID)
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
		}
		if time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	if !force {
		return nil, fmt.Errorf("%w: no master, and this node cannot reach a quorum: %s. If the master and the other voters are lost for good, make this node the master with: pmgcm promote --force (the other members are then fenced until 'pmgcm sync --master_ip <this node's ip>' brings each back)",
			raftnode.ErrNoLeader, d.quorumSummary())
	}
	if err := d.checkSurvivors(ctx); err != nil {
		return nil, err
	}
	fenced, epoch, err := d.forceRecover(ctx, 0)
	if err != nil {
		return nil, err
	}
	return &api.PromoteResponse{CID: me.CID, Name: me.Name, Forced: true, Epoch: epoch, Fenced: fenced}, nil
}

// electionWait is how long to wait for an election before deciding there is no quorum.
func (d *Daemon) electionWait() time.Duration {
	return 3*d.cfg.Raft.HeartbeatTimeout + 2*d.cfg.Raft.ElectionTimeout
}

func (d *Daemon) waitSelfLeader(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for !d.rn().IsLeader() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: leadership did not move to this node: %v", raftnode.ErrTimeout, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// checkSurvivors refuses a forced promotion when another reachable member has a longer
// log (it must be promoted instead, or its writes are lost) or still sees a master. The
// refusal does not depend on which member answered first (survivorsVerdict).
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
	defer d.memberMu.Unlock()
	cl := d.fsm.Cluster()
	me := d.self()
	epoch := cl.Epoch + 1
	d.logger.Warn("forced promotion: making this node the only voter", "epoch", epoch, "remove-cid", removeCID)
	// Recorded first: until the epoch commits, this node talks to no peer, and a restart
	// finishes the promotion (finishPendingEpoch).
	me.PendingEpoch = epoch
	if err := d.setSelf(me); err != nil {
		return nil, 0, err
	}
	if err := d.rn().Close(); err != nil {
		d.logger.Warn("stopping raft for recovery", "error", err)
	}
	rc := d.cfg.Raft
	rc.Dir, rc.LocalID = d.dir.file("raft"), raftnode.ServerID(me.CID)
	rc.Address, rc.Logger = raft.ServerAddress(d.cfg.Addr()), d.logger.Named("raft")
	if err := raftnode.Recover(rc); err != nil {
		return nil, 0, err
	}
	d.fsm.Reset()
	if err := d.openRaft(true); err != nil {
		return nil, 0, err
	}
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
	cfg, err := n.Configuration()
	if err != nil {
		return err
	}
	var voters []raft.ServerID
	isVoter := false
	for _, s := range cfg.Servers {
		if s.Suffrage == raft.Voter {
			voters = append(voters, s.ID)
			isVoter = isVoter || s.ID == raftnode.ServerID(cid)
		}
	}
	if !isVoter {
		if err := n.AddVoter(ctx, cid, memberAddr(target)); err != nil {
			return fmt.Errorf("make cid %d a voter: %w", cid, err)
		}
		voters = append(voters, raftnode.ServerID(cid))
		_, leaderID := n.Leader()
		if len(voters) > wantVoters(len(d.activeMembers())) {
			slices.Sort(voters)
			for i := len(voters) - 1; i >= 0; i-- {
				if voters[i] != leaderID && voters[i] != raftnode.ServerID(cid) {
					if err := n.DemoteVoter(ctx, parseCID(voters[i])); err != nil {
						return fmt.Errorf("demote %s to keep the voter count odd: %w", voters[i], err)
					}
					break
				}
			}
		}
	}
	if err := n.TransferLeadership(cid, memberAddr(target)); err != nil {
		if errors.Is(err, raftnode.ErrNotLeader) {
			return err
		}
		return fmt.Errorf("leadership transfer to cid %d: %w", cid, err)
	}
	return nil
}
