package daemon

import "fmt"

// standingKind is where this node stands in its cluster.
type standingKind int

const (
	// standMember: standalone, or a member of the current epoch taking part in Raft.
	standMember standingKind = iota
	// standPromoting: a forced promotion of this node is under way (nodeFile.PendingEpoch):
	// it talks to no peer until the new epoch commits.
	standPromoting
	// standRemoved: deleted from its cluster (pmgcm delete); it serves nothing of the
	// cluster until it joins again.
	standRemoved
	// standFenced: superseded by a forced promotion elsewhere; it takes no part in
	// Raft until `pmgcm sync --master_ip` re-admits it.
	standFenced
)

// standing is this node's standing, one typed state with what goes with it. It is kept
// in node.json (fields Removed, Fenced and PendingEpoch, as in the first release) and
// read from there by nodeFile.standing.
type standing struct {
	kind standingKind
	// removedFrom is the cluster that removed this node (standRemoved).
	removedFrom string
	// fence says who superseded this node (standFenced).
	fence *fenceInfo
	// pendingEpoch is the epoch a forced promotion of this node commits (standPromoting).
	pendingEpoch uint64
}

// standing returns the standing nf records.
func (nf nodeFile) standing() standing {
	switch {
	case nf.Removed != "":
		return standing{kind: standRemoved, removedFrom: nf.Removed}
	case nf.Fenced != nil:
		return standing{kind: standFenced, fence: nf.Fenced}
	case nf.PendingEpoch != 0:
		return standing{kind: standPromoting, pendingEpoch: nf.PendingEpoch}
	}
	return standing{kind: standMember}
}

// withStanding returns nf recording s.
func (nf nodeFile) withStanding(s standing) nodeFile {
	nf.Removed, nf.Fenced, nf.PendingEpoch = "", nil, 0
	switch s.kind {
	case standRemoved:
		nf.Removed = s.removedFrom
	case standFenced:
		nf.Fenced = s.fence
	case standPromoting:
		nf.PendingEpoch = s.pendingEpoch
	}
	return nf
}

// removedFrom is the standing of a node that cluster id removed.
func removedFrom(id string) standing { return standing{kind: standRemoved, removedFrom: id} }

// fencedBy is the standing of a node that f superseded.
func fencedBy(f *fenceInfo) standing { return standing{kind: standFenced, fence: f} }

// out reports whether the node is out of its cluster (removed or fenced): Raft is
// stopped and it serves no cluster data.
func (s standing) out() bool { return s.kind == standRemoved || s.kind == standFenced }

// talksToPeers reports whether the node takes part in the cluster: it opens Raft and
// RPC to its peers and accepts theirs. Otherwise only the join channel is open.
func (s standing) talksToPeers() bool { return s.kind == standMember }

// err is the refusal of a cluster operation on a node out of its cluster, nil otherwise.
func (s standing) err() error {
	switch s.kind {
	case standRemoved:
		return fmt.Errorf("%w: this node was removed from cluster %s", ErrRemoved, s.removedFrom)
	case standFenced:
		return fencedError(s.fence)
	}
	return nil
}

// standing returns this node's standing now.
func (d *Daemon) standing() standing { return d.self().standing() }

// checkServing refuses cluster operations on a node that was removed from its cluster
// or fenced by a forced promotion elsewhere.
func (d *Daemon) checkServing() error { return d.standing().err() }

// atLevel says whether the cluster runs at feature level level or above (the cluster
// version, fsm.ClusterVersion): a feature of that level may be used with every member.
func (d *Daemon) atLevel(level int) bool { return d.fsm.ClusterVersion() >= level }
