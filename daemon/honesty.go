package daemon

import (
	"fmt"

	"github.com/hashicorp/raft"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/raftnode"
)

// Honest status (DESIGN rule 10): a node that knows no master, or has not applied its
// own admission, is not in state A; a node that has seen a newer term than its own
// leadership, or cannot reach a quorum of voters, is not shown as master. Raft on a
// resumed or cut-off old master goes on calling itself leader until its lease check or
// the next message of a newer term tells it otherwise; status does not repeat that.

// honestLocal downgrades this node's own row (built by localNode) to S, with the
// reason, when it is in a cluster but follows no master or has not yet applied the
// entry that admitted it.
func (d *Daemon) honestLocal(n *api.Node) {
	me := d.self()
	if d.knownCluster() == "" || me.Removed != "" || me.Fenced != nil {
		return
	}
	switch {
	case n.MasterCID == 0:
		n.State = api.StateSyncing
		since := "never"
		if lc := d.rn().SinceLeaderContact(); lc >= 0 {
			since = lc.Round(1e6).String() + " ago"
		}
		n.Reason = "knows no master (last contact with a master: " + since + ")"
	case me.JoinIndex > 0 && d.fsm.AppliedIndex() < me.JoinIndex:
		n.State = api.StateSyncing
		n.Reason = fmt.Sprintf("catching up: applied index %d, admitted at index %d", d.fsm.AppliedIndex(), me.JoinIndex)
	}
}

// honestLeader returns the leader that status shows, given Raft's local answer
// (leaderID) and the rows just read from the members (rows[i] is members[i]'s, the
// local one included). When the local node claims leadership, it keeps it only while
// Raft still says so (asked again after the rows: a master cut off from the voters
// steps down within the leader lease, sooner than unreachable rows time out) and no row
// is at a newer term; otherwise the leader is the one the rows of the newest term
// follow, or none, and the local row is corrected to match. Other rows that claim
// mastership at an older term than the newest seen, or that know no master, are not
// shown active.
func (d *Daemon) honestLeader(leaderID raft.ServerID, rows []api.Node) raft.ServerID {
	var maxTerm, maxTermMaster uint64
	local := -1
	for i := range rows {
		r := &rows[i]
		if r.Local {
			local = i
		}
		if r.State == api.StateDown {
			continue
		}
		if r.Term > maxTerm {
			maxTerm, maxTermMaster = r.Term, 0
		}
		if r.Term == maxTerm && r.MasterCID != 0 {
			maxTermMaster = r.MasterCID
		}
	}
	for i := range rows {
		r := &rows[i]
		if r.Local || r.State == api.StateDown {
			continue
		}
		switch {
		case r.MasterCID == r.CID && r.Term < maxTerm:
			r.State = api.StateSyncing
			r.Reason = fmt.Sprintf("claims mastership at term %d, the cluster is at term %d", r.Term, maxTerm)
		case r.MasterCID == 0 && r.State == api.StateActive:
			r.State = api.StateSyncing
			if r.Reason == "" {
				r.Reason = "knows no master"
			}
		}
	}
	self := raftnode.ServerID(d.self().CID)
	if local < 0 || leaderID != self {
		return leaderID
	}
	me := &rows[local]
	reason := ""
	switch {
	case !d.rn().IsLeader():
		_, now := d.rn().Leader()
		return now
	case me.Term < maxTerm:
		reason = fmt.Sprintf("has seen term %d, newer than its own leadership at term %d; stepping down", maxTerm, me.Term)
	}
	if reason == "" {
		return leaderID
	}
	me.State, me.Reason, me.MasterCID = api.StateSyncing, reason, 0
	if maxTermMaster != 0 && maxTermMaster != d.self().CID && me.Term < maxTerm {
		me.MasterCID = maxTermMaster
		return raftnode.ServerID(maxTermMaster)
	}
	return ""
}
