package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/hashicorp/raft"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/fsm"
	"github.com/pmgcm/pmgcm/raftnode"
	"github.com/pmgcm/pmgcm/transport"
)

// maxVoters is the most voters a cluster has; further nodes are non-voters.
const maxVoters = 5

// catchUpSlack is how far (in Raft entries) a node may trail the master and still count
// as caught up: a busy cluster is never exactly level.
const catchUpSlack = 64

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
// list and the voter policy; on every node it watches for this node's removal.
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
		if d.rn().IsLeader() {
			if err := d.reconcileVoters(ctx); err != nil && ctx.Err() == nil {
				d.logger.Warn("voter reconciliation", "error", err)
			}
		} else {
			d.checkRemoved(ctx)
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
	members := d.fsm.Members()
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
				return fmt.Errorf("add cid %d as non-voter: %w", m.CID, err)
			}
			inRaft[id] = raft.Server{ID: id, Suffrage: raft.Nonvoter}
		}
	}
	for id := range inRaft {
		if !isMember[id] {
			if err := n.RemoveServer(ctx, parseCID(id)); err != nil {
				return fmt.Errorf("remove server %s: %w", id, err)
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
	for len(voters) < want && len(nonvoters) > 0 {
		promoted := false
		for i, m := range nonvoters {
			if !d.caughtUp(ctx, m) {
				continue
			}
			if err := n.AddVoter(ctx, m.CID, memberAddr(m)); err != nil {
				return fmt.Errorf("promote cid %d: %w", m.CID, err)
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
			return fmt.Errorf("demote cid %d: %w", m.CID, err)
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

// caughtUp reports whether member m has applied the log to within catchUpSlack of this
// leader's commit index.
func (d *Daemon) caughtUp(ctx context.Context, m fsm.Member) bool {
	commit := d.rn().Stats().CommitIndex
	ctx, cancel := context.WithTimeout(ctx, d.cfg.RPCTimeout)
	defer cancel()
	var node api.Node
	if err := d.call(ctx, d.rpcClient, memberAddr(m), http.MethodGet, rpcNode, nil, &node); err != nil {
		return false
	}
	return node.AppliedIndex+catchUpSlack >= commit
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
func (d *Daemon) deleteMember(ctx context.Context, cid uint64) (*api.DeleteResponse, error) {
	if err := d.checkServing(); err != nil {
		return nil, err
	}
	if d.fsm.Cluster() == nil {
		return nil, ErrNoCluster
	}
	m, ok := d.fsm.Member(cid)
	if !ok {
		return nil, fmt.Errorf("%w: no node has cid %d (pmgcm status lists the members)", fsm.ErrUnknownMember, cid)
	}
	if !d.rn().IsLeader() {
		leader, err := d.waitLeaderAddr(ctx)
		if err != nil {
			return nil, err
		}
		var out api.DeleteResponse
		return &out, d.call(ctx, d.rpcClient, leader, http.MethodPost, rpcDelete, api.DeleteRequest{CID: cid}, &out)
	}
	d.memberMu.Lock()
	defer d.memberMu.Unlock()
	if m.CID == d.self().CID {
		return nil, fmt.Errorf("%w: cid %d (%s) is the master and cannot delete itself: make another node master first (pmgcm promote on it), then delete cid %d there",
			ErrNotMaster, cid, m.Name, cid)
	}
	// Membership first: from this commit on, every member refuses the node's certificate.
	if _, err := d.applyLocal(ctx, &fsm.RemoveMember{CID: cid}); err != nil {
		return nil, err
	}
	if err := d.rn().RemoveServer(ctx, cid); err != nil {
		// The member is gone; reconcileVoters removes the server on its next pass.
		d.logger.Warn("remove server from raft", "cid", cid, "error", err)
	}
	d.logger.Info("node deleted", "cid", cid, "name", m.Name, "address", memberAddr(m))
	d.kickLeaderDuties()
	return &api.DeleteResponse{CID: cid, Name: m.Name, IP: m.IP}, nil
}

func (d *Daemon) handleRPCDelete(w http.ResponseWriter, r *http.Request) {
	var req api.DeleteRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4<<10)).Decode(&req); err != nil {
		writeErr(w, fmt.Errorf("%w: %v", fsm.ErrBadCommand, err))
		return
	}
	out, err := d.deleteMember(r.Context(), req.CID)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// removedAfter is how long a member may go without a master before it asks its peers
// whether it is still a member.
const removedAfter = 2 * time.Second

// checkRemoved asks the other members, over the join channel with their fingerprints
// pinned, whether this node is still a member, once it has had no master for a while.
// A node that a member of its own cluster disowns was deleted: it stops Raft, keeps its
// data, and refuses cluster operations until it joins again.
func (d *Daemon) checkRemoved(ctx context.Context) {
	me := d.self()
	if !me.Joined && d.fsm.Cluster() == nil || me.Removed != "" {
		return
	}
	st := d.rn().Stats()
	if leader, _ := d.rn().Leader(); leader != "" && st.LastContact < removedAfter {
		return
	}
	if time.Since(d.started) < removedAfter {
		return
	}
	peers := d.peers.Load()
	if peers == nil || peers.ClusterID == "" {
		return
	}
	myFP := d.mux.Identity().Fingerprint
	for _, m := range peers.Members {
		if m.CID == me.CID {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, d.cfg.RPCTimeout)
		client, err := transport.PinnedHTTPClient(transport.ChanJoin, m.Fingerprint, d.cfg.RPCTimeout)
		if err != nil {
			cancel()
			continue
		}
		var out membership
		err = d.call(cctx, client, memberAddr(m), http.MethodPost, joinCheckPath, map[string]string{"fingerprint": myFP}, &out)
		client.CloseIdleConnections()
		cancel()
		if err != nil || out.ClusterID != peers.ClusterID || out.Member {
			continue
		}
		d.logger.Warn("this node was removed from the cluster; stopping raft", "cluster-id", out.ClusterID, "told-by-cid", m.CID)
		me.Removed = out.ClusterID
		if err := d.setSelf(me); err != nil {
			d.logger.Error("cannot record the removal", "error", err)
			return
		}
		if err := d.rn().Close(); err != nil {
			d.logger.Warn("stopping raft", "error", err)
		}
		return
	}
}
