package daemon

import (
	"fmt"
	"sync/atomic"

	"github.com/pmgcm/pmgcm/cluster"
	"github.com/pmgcm/pmgcm/fsm"
	"github.com/pmgcm/pmgcm/raftnode"
)

// memberView owns the lookups of the members as this node sees them: the members of
// the current epoch, the member that leads now, and how a certificate stands
// (for the join path).
type memberView struct {
	fsm *fsm.FSM
	// raft is this node's Raft node (Daemon.rn; made after the view).
	raft func() *raftnode.Node
	// peers is the membership this node trusts at the handshake (Daemon.peers): it
	// answers while the state machine is still replaying the log after a start.
	peers *atomic.Pointer[peerCache]
	// standing is where this node stands (a removed or fenced node says nothing).
	standing func() standing
}

// newMemberView returns the member view of d, whose fsm is made.
func newMemberView(d *Daemon) *memberView {
	return &memberView{fsm: d.fsm, raft: d.rn, peers: &d.peers, standing: d.standing}
}

// membership says how this node sees the certificate fingerprint
// (cluster.JoinPathMembership). A removed or fenced node says nothing.
func (v *memberView) membership(fingerprint string) cluster.Membership {
	out := cluster.Membership{}
	if cl := v.fsm.Cluster(); cl != nil && !v.standing().out() {
		out.ClusterID, out.Epoch, out.Applied = cl.ID, cl.Epoch, v.fsm.AppliedIndex()
		m, ok := v.fsm.MemberByFingerprint(fingerprint)
		out.Member, out.CID, out.Fenced = ok, m.CID, ok && m.Fenced(cl.Epoch)
		if master, ok := v.master(); ok {
			out.MasterCID, out.MasterName, out.MasterIP = master.CID, master.Name, master.IP
		}
	}
	return out
}

// master returns the member that leads now, as this node knows it: the one
// lookup of the master as a member (its address alone: leaderAddr).
func (v *memberView) master() (fsm.Member, bool) {
	_, id := v.raft().Leader()
	if id == "" {
		return fsm.Member{}, false
	}
	return v.fsm.Member(parseCID(id))
}

// active returns the members of the current epoch: the ones that take part in
// Raft. Fenced members stay listed until they are re-admitted or deleted. While the state
// machine is still replaying the log after a start, the member cache answers.
func (v *memberView) active() []fsm.Member {
	members, epoch := v.fsm.Members(), uint64(0)
	if cl := v.fsm.Cluster(); cl != nil {
		epoch = cl.Epoch
	}
	if cache := v.peers.Load(); cache != nil && cache.ClusterID != "" && v.fsm.AppliedIndex() < cache.Index {
		members, epoch = cache.Members, cache.Epoch
	}
	var out []fsm.Member
	for _, m := range members {
		if !m.Fenced(epoch) {
			out = append(out, m)
		}
	}
	return out
}

// fencedError explains a fenced node's refusal and the way back.
func fencedError(f *fenceInfo) error {
	return fmt.Errorf("%w: a forced promotion made cid %d (%s, %s) master of cluster %s at epoch %d; bring this node back with: pmgcm sync --master_ip %s",
		ErrFenced, f.MasterCID, f.MasterName, f.MasterIP, f.ClusterID, f.Epoch, f.MasterIP)
}
