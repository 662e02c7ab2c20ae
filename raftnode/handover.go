package raftnode

import (
	"time"

	"github.com/hashicorp/raft"
)

// handoverTimeout bounds the leadership handover of a stopping leader: Stop and Close
// then stop Raft anyway.
const handoverTimeout = 2 * time.Second

// handoverRetry is the pause between two handover attempts.
const handoverRetry = 50 * time.Millisecond

// handover hands leadership, if this node has it and another voter exists, to the most
// up-to-date voter (raft's LeadershipTransfer picks the one with the highest match
// index) before Raft stops: raft v1.8.0's Shutdown never transfers leadership, and the
// followers would otherwise wait out an election timeout. A transfer that fails (raft
// bounds each attempt by the election timeout) is tried again until handoverTimeout has
// passed.
func (n *Node) handover(r *raft.Raft) {
	if r.State() != raft.Leader || !n.hasOtherVoter(r) {
		return
	}
	start := time.Now()
	deadline := start.Add(handoverTimeout)
	for attempt := 1; ; attempt++ {
		errc := make(chan error, 1)
		go func() { errc <- r.LeadershipTransfer().Error() }()
		var err error
		select {
		case err = <-errc:
		case <-time.After(time.Until(deadline)):
			n.logger.Warn("leadership handover did not finish in time; stopping anyway", "waited", handoverTimeout)
			return
		}
		if err == nil {
			leader, id := r.LeaderWithID()
			n.logger.Info("handed leadership over before stopping", "to-id", id, "to-address", leader,
				"took", time.Since(start), "attempts", attempt)
			return
		}
		if r.State() != raft.Leader || time.Until(deadline) < handoverRetry {
			n.logger.Warn("leadership handover failed; stopping anyway", "error", err, "attempts", attempt)
			return
		}
		time.Sleep(handoverRetry) // a pause between attempts, not a wait for a state
	}
}

// hasOtherVoter reports whether the configuration names a voter besides this node.
func (n *Node) hasOtherVoter(r *raft.Raft) bool {
	f := r.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter && s.ID != n.localID() {
			return true
		}
	}
	return false
}

func (n *Node) localID() raft.ServerID {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cfg.LocalID
}
