package daemon

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/pmgcm/pmgcm/internal/sharedop"
	"github.com/pmgcm/pmgcm/raftnode"
)

// readBatch lets concurrent linearizable reads share one read-index round: one
// VerifyLeader on the master, one ReadIndex RPC to the master from any other node,
// instead of one per read (issue 16: lin_get was bound by those rounds).
//
// A read joins the next round, one that starts after the read arrived: at most one round
// runs at a time, and the reads that arrive while it runs wait for it to end and then
// share the one after it. The index a round returns was thus confirmed by the master
// after every read of the round arrived, which is what a linearizable read needs; each
// read then waits until its own state machine has applied it.
type readBatch struct {
	// round asks for the index; ctx is bounded by timeout, and ends roundAnswerMargin
	// before the earliest deadline of the round's reads.
	round   func(ctx context.Context) (uint64, error)
	timeout time.Duration

	mu      sync.Mutex
	running bool
	next    *readRound // the round the reads arriving now join; nil until one does
}

// readRound is one shared read-index round; idx and err are set before done is closed.
type readRound struct {
	done chan struct{}
	idx  uint64
	err  error
	// deadline is the earliest deadline of the round's reads (zero: none), set under
	// readBatch.mu until the round starts.
	deadline time.Time
}

// roundAnswerMargin is how long before its earliest read gives up a round ends: a round
// that ran until then could only answer "timed out"; ended in time, it answers what it
// found (no quorum, and which voters this node reaches).
const roundAnswerMargin = 100 * time.Millisecond

func newReadBatch(timeout time.Duration, round func(ctx context.Context) (uint64, error)) *readBatch {
	return &readBatch{round: round, timeout: timeout}
}

// index returns a read index confirmed after the call began, shared with the other
// reads of its round. ctx bounds only this caller's wait.
func (b *readBatch) index(ctx context.Context) (uint64, error) {
	b.mu.Lock()
	if b.next == nil {
		b.next = &readRound{done: make(chan struct{})}
	}
	r := b.next
	if d, ok := ctx.Deadline(); ok {
		r.deadline = sharedop.Earliest(r.deadline, d)
	}
	if !b.running {
		b.startLocked()
	}
	b.mu.Unlock()
	select {
	case <-r.done:
		return r.idx, r.err
	case <-ctx.Done():
		return 0, fmt.Errorf("%w: %v", raftnode.ErrTimeout, ctx.Err())
	}
}

// startLocked starts the round in b.next on a goroutine of its own; b.mu is held.
func (b *readBatch) startLocked() {
	r, deadline := b.takeLocked()
	go b.run(r, deadline)
}

// takeLocked takes the round in b.next to run it, and returns it with its deadline;
// b.mu is held.
func (b *readBatch) takeLocked() (*readRound, time.Time) {
	r := b.next
	b.next = nil
	b.running = true
	return r, sharedop.Deadline(time.Now(), b.timeout, r.deadline, roundAnswerMargin)
}

// run runs round r, then each round whose reads arrived meanwhile, on the same
// goroutine (not a new one per round: under steady reads the rounds follow each other),
// until no read waits.
func (b *readBatch) run(r *readRound, deadline time.Time) {
	for {
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		r.idx, r.err = b.round(ctx)
		cancel()
		close(r.done)
		b.mu.Lock()
		if b.next == nil {
			b.running = false
			b.mu.Unlock()
			return
		}
		r, deadline = b.takeLocked()
		b.mu.Unlock()
	}
}
