package raftnode

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// LeaderDuty is work that only the leader does (the daemon's voter reconciliation, for
// one). It is started once per leadership term, after the term's barrier has applied
// (the state machine then holds every entry of earlier terms), and ctx is cancelled when
// the term ends: leadership lost or handed over, Raft stopped, the node closed. It must
// return soon after ctx ends; the next term does not start before it has.
type LeaderDuty func(ctx context.Context)

// OnLeader registers duty to run on this node in every leadership term from the next
// one on. Register duties before Open.
func (n *Node) OnLeader(duty LeaderDuty) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.duties = append(n.duties, duty)
}

// barrierRetry is how long a new leader waits before it retries a failed barrier.
const barrierRetry = 100 * time.Millisecond

// monitorLeadership runs one leader loop per leadership term of the instance, started and
// stopped from Raft's LeaderCh, as Consul's monitorLeadership does. LeaderCh keeps only
// the latest transition: true while a term runs means leadership was lost and regained
// meanwhile, so the running term ends and a new one starts.
func (n *Node) monitorLeadership(in *instance) {
	defer in.wg.Done()
	var stopTerm func() // ends the running term and waits for it; nil when none runs
	end := func() {
		if stopTerm != nil {
			stopTerm()
			stopTerm = nil
		}
	}
	defer end()
	for {
		select {
		case <-in.stop:
			return
		case isLeader := <-in.raft.LeaderCh():
			end()
			if isLeader {
				stopTerm = n.startTerm(in.raft)
			}
		}
	}
}

// startTerm starts the leader loop of a new term and returns what ends it.
func (n *Node) startTerm(r *raft.Raft) func() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		n.leaderLoop(ctx, r)
	}()
	return func() {
		cancel()
		<-done
	}
}

// leaderLoop is one leadership term: the barrier that makes reads of this term
// linearizable, then every leader duty until ctx ends.
func (n *Node) leaderLoop(ctx context.Context, r *raft.Raft) {
	term := r.CurrentTerm()
	for {
		err := r.Barrier(defaultApplyTimeout).Error()
		if err == nil {
			break
		}
		n.logger.Warn("leader barrier failed", "term", term, "error", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(barrierRetry):
		}
	}
	duties, ok := n.markReady(ctx, r, term)
	if !ok {
		return // the term ended meanwhile: it must not count as ready, nor run duties
	}
	n.notifyApplied(0)
	n.logger.Info("leader loop started", "term", term, "duties", len(duties))
	var wg sync.WaitGroup
	for _, duty := range duties {
		wg.Add(1)
		go func() {
			defer wg.Done()
			duty(ctx)
		}()
	}
	<-ctx.Done()
	wg.Wait()
	n.logger.Info("leader loop stopped", "term", term)
}

// markReady records term as the one whose barrier has applied, and returns the duties
// to run in it; ok is false, and nothing is recorded, when the term already ended (ctx)
// or r is no longer the running instance (Stop, Restart): a barrier that returned
// after stopRun cleared readyTerm must not set it again, or a restarted Raft back in
// the same term would count as ready before its own barrier.
func (n *Node) markReady(ctx context.Context, r *raft.Raft, term uint64) (duties []LeaderDuty, ok bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if ctx.Err() != nil || n.run == nil || n.run.raft != r {
		return nil, false
	}
	n.readyTerm = term
	return append([]LeaderDuty(nil), n.duties...), true
}

// WaitLeader blocks until this node is a ready leader (its term's barrier has applied,
// as ReadIndex needs), ctx ends (ErrTimeout) or the node closes (ErrClosed). It waits on
// Raft's notifications, not by polling.
func (n *Node) WaitLeader(ctx context.Context) error {
	for {
		changed := n.LeaderChanged()
		n.mu.Lock()
		ch := n.applied
		ready := n.run != nil && n.readyTerm != 0 && n.run.raft.State() == raft.Leader && n.readyTerm == n.run.raft.CurrentTerm()
		closed := n.closed
		n.mu.Unlock()
		switch {
		case ready:
			return nil
		case closed:
			return ErrClosed
		}
		select {
		case <-ch:
		case <-changed:
		case <-n.done:
			return ErrClosed
		case <-ctx.Done():
			return fmt.Errorf("%w: this node did not become a ready master: %v", ErrTimeout, ctx.Err())
		}
	}
}
