package daemon

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/pmgcm/pmgcm/fsm"
)

// haltSignal wakes the master's handover duty when the state machine halts (it met a
// log entry this build cannot apply), so that a halted master hands over at once rather
// than at the duty's next turn.
type haltSignal struct {
	mu sync.Mutex
	ch chan struct{} // closed by fire; nil until someone waits
}

// wait returns a channel closed at the next fire.
func (s *haltSignal) wait() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch == nil {
		s.ch = make(chan struct{})
	}
	return s.ch
}

// fire wakes the waiters. It does not block (the FSM's halt hook calls it on Raft's FSM
// goroutine).
func (s *haltSignal) fire() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch != nil {
		close(s.ch)
		s.ch = nil
	}
}

// handoverReason says why this node must not be master, "" when nothing stops it: it is
// in maintenance, or its state machine halted (its reads would block and its writes
// fail until it is upgraded).
func (mt *maintenance) handoverReason() string {
	if mt.fsm.Halted() != nil {
		return "the replicated log halted on this node (upgrade pmgclusterd on it)"
	}
	if mt.maintenanceOn() {
		return "in maintenance"
	}
	return ""
}

// handoverDuty runs on the master for one leadership term: a master that must not be
// one (handoverReason) hands mastership over through handOver at once, when it becomes
// master and the moment its state machine halts, and retries every handoverEvery while
// no voter can take it. A halted node that wins an election again so hands over again
// at the start of that term.
func (mt *maintenance) handoverDuty(ctx context.Context, handOver func(context.Context) (uint64, error)) {
	for {
		halted := mt.tools.halt.wait() // before the look: no halt is missed
		if why := mt.handoverReason(); why != "" && mt.host.rn().IsLeader() && mt.fsm.Cluster() != nil {
			if _, err := handOver(ctx); err != nil && ctx.Err() == nil {
				mt.logger.Warn("master, but "+why, "error", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-halted:
		case <-time.After(handoverEvery):
		}
	}
}

// transferHalted hands leadership of this halted master straight to voter cid. The
// voter policy's steps (promoter.transferTo) are skipped: they may propose a suffrage
// record, which a halted state machine cannot apply, and its member list is stale.
// handOver only picks a node that is a voter in the Raft configuration.
func (mt *maintenance) transferHalted(_ context.Context, cid uint64) error {
	m, ok := mt.fsm.Member(cid)
	if !ok {
		return fmt.Errorf("%w: cid %d", fsm.ErrUnknownMember, cid)
	}
	return mt.host.rn().TransferLeadership(cid, memberAddr(m))
}
