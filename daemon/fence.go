package daemon

import (
	"fmt"

	"github.com/pmgcm/pmgcm/cluster"
	"github.com/pmgcm/pmgcm/fsm"
)

// membershipOf says how this node sees the certificate fingerprint
// (cluster.JoinPathMembership). A removed or fenced node says nothing.
func (d *Daemon) membershipOf(fingerprint string) cluster.Membership {
	out := cluster.Membership{}
	if cl := d.fsm.Cluster(); cl != nil && !d.standing().out() {
		out.ClusterID, out.Epoch, out.Applied = cl.ID, cl.Epoch, d.fsm.AppliedIndex()
		m, ok := d.fsm.MemberByFingerprint(fingerprint)
		out.Member, out.CID, out.Fenced = ok, m.CID, ok && m.Fenced(cl.Epoch)
		if master, ok := d.masterMember(); ok {
			out.MasterCID, out.MasterName, out.MasterIP = master.CID, master.Name, master.IP
		}
	}
	return out
}

// masterMember returns the member that leads now, as this node knows it: the one
// lookup of the master as a member (its address alone: leaderAddr).
func (d *Daemon) masterMember() (fsm.Member, bool) {
	_, id := d.rn().Leader()
	if id == "" {
		return fsm.Member{}, false
	}
	return d.fsm.Member(parseCID(id))
}

// activeMembers returns the members of the current epoch: the ones that take part in
// Raft. Fenced members stay listed until they are re-admitted or deleted. While the state
// machine is still replaying the log after a start, the member cache answers.
func (d *Daemon) activeMembers() []fsm.Member {
	members, epoch := d.fsm.Members(), uint64(0)
	if cl := d.fsm.Cluster(); cl != nil {
		epoch = cl.Epoch
	}
	if cache := d.peers.Load(); cache != nil && cache.ClusterID != "" && d.fsm.AppliedIndex() < cache.Index {
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
