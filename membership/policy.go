package membership

import (
	"slices"
	"strconv"

	"github.com/hashicorp/raft"

	"github.com/pmgcm/pmgcm/fsm"
)

// MaxVoters is the most voters a cluster has; further nodes are non-voters.
const MaxVoters = 5

// WantVoters is the number of voters a cluster of nodes active members has: every node
// up to MaxVoters, and with 3 or more nodes an odd count.
func WantVoters(nodes int) int {
	v := min(nodes, MaxVoters)
	if v >= 3 && v%2 == 0 {
		v--
	}
	return v
}

// Op is the kind of one change of a Plan.
type Op int

// The changes a Plan is made of, in the order Plan lists them.
const (
	// AddNonvoter adds a member that is missing from the Raft configuration.
	AddNonvoter Op = iota + 1
	// Remove removes a Raft server that is no (active) member.
	Remove
	// Promote makes a non-voter a voter.
	Promote
	// Demote makes a voter a non-voter.
	Demote
	// Record writes the member's Raft suffrage into the member list (fsm.SetSuffrage),
	// so that every node shows it.
	Record
)

func (o Op) String() string {
	switch o {
	case AddNonvoter:
		return "add-nonvoter"
	case Remove:
		return "remove"
	case Promote:
		return "promote"
	case Demote:
		return "demote"
	case Record:
		return "record"
	}
	return "op(" + strconv.Itoa(int(o)) + ")"
}

// Change is one step of a Plan.
type Change struct {
	Op Op
	// ID is the Raft server ID; CID is the member's CID (0 for a Remove of a server
	// whose ID is not a CID).
	ID  raft.ServerID
	CID uint64
	// Address is the member's cluster address (AddNonvoter, Promote) or the server's
	// (Remove).
	Address string
	// Suffrage is what Record writes.
	Suffrage fsm.Suffrage
}

// Facts is what the voter policy decides from.
type Facts struct {
	// Config is the latest Raft configuration.
	Config raft.Configuration
	// Members are the active members (neither removed nor fenced).
	Members []fsm.Member
	// Leader is the CID of the leader, which is never demoted nor removed.
	Leader uint64
	// CaughtUp names the non-voters that have reached their catch-up target (Targets):
	// only those are promoted to fill the voter count.
	CaughtUp map[uint64]bool
	// Keep names members that must be voters whatever their catch-up (the target of a
	// leadership transfer): promoted if they are not, never demoted.
	Keep []uint64
}

// Address is a member's cluster address, "ip:port".
func Address(m fsm.Member) string {
	return m.IP + ":" + strconv.Itoa(m.Port)
}

// ServerID is the Raft server ID of the node with the given CID: the CID in decimal.
func ServerID(cid uint64) raft.ServerID { return raft.ServerID(strconv.FormatUint(cid, 10)) }

// ParseServerID is the CID of a Raft server ID, false when it is not one.
func ParseServerID(id raft.ServerID) (uint64, bool) {
	cid, err := strconv.ParseUint(string(id), 10, 64)
	return cid, err == nil && cid > 0
}

// Plan returns the changes that bring f.Config in line with f.Members and the voter
// policy, in the order they must be made: missing members are added as non-voters,
// servers that are no member are removed, members of Keep and then caught-up non-voters
// (lowest CID first) are promoted while voters are short, surplus voters are demoted
// (highest CID first, by number, never the leader nor a member of Keep), and every member
// whose recorded suffrage differs from the outcome is recorded.
//
// It is a pure function: the same facts give the same plan.
func Plan(f Facts) []Change {
	var out []Change
	inRaft := map[raft.ServerID]raft.ServerSuffrage{}
	for _, s := range f.Config.Servers {
		inRaft[s.ID] = s.Suffrage
	}
	members := slices.Clone(f.Members)
	slices.SortFunc(members, func(a, b fsm.Member) int { return cmpUint(a.CID, b.CID) })
	isMember := map[raft.ServerID]bool{}
	for _, m := range members {
		id := ServerID(m.CID)
		isMember[id] = true
		if _, ok := inRaft[id]; !ok {
			out = append(out, Change{Op: AddNonvoter, ID: id, CID: m.CID, Address: Address(m)})
			inRaft[id] = raft.Nonvoter
		}
	}
	for _, s := range sortedServers(f.Config.Servers) {
		if isMember[s.ID] || s.ID == ServerID(f.Leader) {
			continue
		}
		cid, _ := ParseServerID(s.ID)
		out = append(out, Change{Op: Remove, ID: s.ID, CID: cid, Address: string(s.Address)})
		delete(inRaft, s.ID)
	}
	voter := map[uint64]bool{}
	nvoters := 0
	for _, m := range members {
		if inRaft[ServerID(m.CID)] == raft.Voter {
			voter[m.CID] = true
			nvoters++
		}
	}
	want := WantVoters(len(members))
	promote := func(m fsm.Member) {
		out = append(out, Change{Op: Promote, ID: ServerID(m.CID), CID: m.CID, Address: Address(m)})
		voter[m.CID] = true
		nvoters++
	}
	for _, m := range members {
		if slices.Contains(f.Keep, m.CID) && !voter[m.CID] {
			promote(m)
		}
	}
	for _, m := range members {
		if nvoters >= want {
			break
		}
		if !voter[m.CID] && f.CaughtUp[m.CID] {
			promote(m)
		}
	}
	for i := len(members) - 1; i >= 0 && nvoters > want; i-- {
		m := members[i]
		if !voter[m.CID] || m.CID == f.Leader || slices.Contains(f.Keep, m.CID) {
			continue
		}
		out = append(out, Change{Op: Demote, ID: ServerID(m.CID), CID: m.CID, Address: Address(m)})
		voter[m.CID] = false
		nvoters--
	}
	for _, m := range members {
		s := fsm.Nonvoter
		if voter[m.CID] {
			s = fsm.Voter
		}
		if m.Suffrage != s {
			out = append(out, Change{Op: Record, ID: ServerID(m.CID), CID: m.CID, Suffrage: s})
		}
	}
	return out
}

// Waiting returns the CIDs of the members that would be promoted if caught up: the
// non-voters (or members missing from Raft) while the voters are short. The master asks
// only these how far they have applied.
func Waiting(cfg raft.Configuration, members []fsm.Member) []uint64 {
	voters := 0
	isVoter := map[raft.ServerID]bool{}
	for _, s := range cfg.Servers {
		if s.Suffrage == raft.Voter {
			isVoter[s.ID] = true
		}
	}
	var out []uint64
	for _, m := range members {
		if isVoter[ServerID(m.CID)] {
			voters++
		} else {
			out = append(out, m.CID)
		}
	}
	if voters >= WantVoters(len(members)) {
		return nil
	}
	slices.Sort(out)
	return out
}

func sortedServers(in []raft.Server) []raft.Server {
	out := slices.Clone(in)
	slices.SortFunc(out, func(a, b raft.Server) int {
		ca, oka := ParseServerID(a.ID)
		cb, okb := ParseServerID(b.ID)
		switch {
		case oka && okb:
			return cmpUint(ca, cb)
		case oka != okb: // CIDs first
			if oka {
				return -1
			}
			return 1
		}
		if a.ID < b.ID {
			return -1
		}
		if a.ID > b.ID {
			return 1
		}
		return 0
	})
	return out
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
