package membership

import "slices"

// Targets holds, on the master, the index each non-voter must have applied before it is
// made a voter: the master's own applied index when it first saw the non-voter in this
// term. A fixed target and not a distance to the moving commit index: a node that has
// applied nothing yet is within any distance of a young cluster's commit index, and
// promoting it before the master can reach it costs the quorum (a 1-voter cluster that
// promotes an unreachable second voter steps down). Having applied the target means the
// node has received the log from this cluster, so it is both consistent and reachable.
//
// The zero value is ready to use. It is not safe for concurrent use: its owner (the
// master's voter duty) serializes access.
type Targets struct {
	term    uint64
	targets map[uint64]uint64 // cid -> index
}

// Ready reports whether non-voter cid, which has applied index applied, has reached its
// target; the first call in a term for a cid sets the target to leaderApplied.
func (c *Targets) Ready(term, cid, applied, leaderApplied uint64) bool {
	if c.targets == nil || c.term != term {
		c.term, c.targets = term, map[uint64]uint64{}
	}
	target, ok := c.targets[cid]
	if !ok {
		target = leaderApplied
		c.targets[cid] = target
	}
	return applied >= target
}

// Keep forgets the targets of every cid not in cids (promoted, deleted or fenced).
func (c *Targets) Keep(cids []uint64) {
	for cid := range c.targets {
		if !slices.Contains(cids, cid) {
			delete(c.targets, cid)
		}
	}
}
