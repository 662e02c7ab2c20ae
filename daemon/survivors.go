package daemon

import (
	"fmt"
	"slices"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/fsm"
	"github.com/pmgcm/pmgcm/raftnode"
)

// survivor is what a reachable member said of itself before a forced promotion.
type survivor struct {
	m fsm.Member
	n api.Node
}

// survivorsVerdict decides, from what the reachable members said (whatever order they
// answered in), whether this node, with Raft stats mine, may force its promotion. It
// refuses, in this order: when a member still reaches a master (the lowest CID is
// named): then nothing is lost and a plain promote or the network is the answer; when
// members hold a longer log: the one with the longest (highest last term, then index,
// then lowest CID) is named, as the node to promote instead. Down members are ignored.
func survivorsVerdict(mine raftnode.Stats, answers []survivor) error {
	var seesMaster, longer []survivor
	for _, s := range answers {
		switch {
		case s.n.State == api.StateDown:
		case s.n.MasterCID != 0:
			seesMaster = append(seesMaster, s)
		case logAfter(s.n.LastLogTerm, s.n.LastIndex, mine.LastLogTerm, mine.LastIndex):
			longer = append(longer, s)
		}
	}
	if len(seesMaster) > 0 {
		s := slices.MinFunc(seesMaster, func(a, b survivor) int { return cmpCID(a, b) })
		return fmt.Errorf("%w: cid %d (%s at %s) still reaches a master: promote without --force, or check the network", ErrNotMaster, s.m.CID, s.m.Name, s.m.IP)
	}
	if len(longer) > 0 {
		s := slices.MaxFunc(longer, func(a, b survivor) int {
			switch {
			case logAfter(a.n.LastLogTerm, a.n.LastIndex, b.n.LastLogTerm, b.n.LastIndex):
				return 1
			case logAfter(b.n.LastLogTerm, b.n.LastIndex, a.n.LastLogTerm, a.n.LastIndex):
				return -1
			}
			return -cmpCID(a, b) // the lowest CID wins a tie
		})
		return fmt.Errorf("%w: cid %d (%s at %s) holds a longer log (term %d, index %d; this node: term %d, index %d): run 'pmgcm promote --force' on cid %d instead, or its writes are lost",
			ErrBehind, s.m.CID, s.m.Name, s.m.IP, s.n.LastLogTerm, s.n.LastIndex, mine.LastLogTerm, mine.LastIndex, s.m.CID)
	}
	return nil
}

// logAfter reports whether a log ending at (term, index) is longer than one ending at
// (otherTerm, otherIndex), by Raft's up-to-date rule.
func logAfter(term, index, otherTerm, otherIndex uint64) bool {
	return term > otherTerm || term == otherTerm && index > otherIndex
}

func cmpCID(a, b survivor) int {
	switch {
	case a.m.CID < b.m.CID:
		return -1
	case a.m.CID > b.m.CID:
		return 1
	}
	return 0
}
