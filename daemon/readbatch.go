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
	// ends is when the round is cut off (its ctx's deadline), set when it starts;
	// byDeadline says a read's deadline set it, not the round timeout.
	ends       time.Time
	byDeadline bool
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
//
// A round ends before the earliest deadline of its reads. A read with more time left
// whose round failed at that end (a master slow to answer, a quorum that comes back) joins
// the next round instead of failing with it: one impatient reader does not cut the wait
// of the others short.
func (b *readBatch) index(ctx context.Context) (uint64, error) {
	for {
		r := b.join(ctx)
		select {
		case <-r.done:
			if r.err == nil || !cutShort(ctx, r) {
				return r.idx, r.err
			}
		case <-ctx.Done():
			return 0, fmt.Errorf("%w: %v", raftnode.ErrTimeout, ctx.Err())
		}
	}
}

// join adds a read bounded by ctx to the next round, started if none runs, and returns
// that round.
func (b *readBatch) join(ctx context.Context) *readRound {
	b.mu.Lock()
	defer b.mu.Unlock()
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
	return r
}

// cutShort says whether the failed round r ran to an end set by a read's deadline (not
// by the round timeout) that is earlier than the read of ctx needs: that read then has
// time for another round, which ends at the latest at its own deadline or the timeout.
func cutShort(ctx context.Context, r *readRound) bool {
	if ctx.Err() != nil || !r.byDeadline || time.Now().Before(r.ends) {
		return false // this read's time is up, the round ran its full time, or it failed before its end
	}
	d, ok := ctx.Deadline()
	return !ok || r.ends.Before(d.Add(-roundAnswerMargin))
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
	now := time.Now()
	r.ends = sharedop.Deadline(now, b.timeout, r.deadline, roundAnswerMargin)
	r.byDeadline = r.ends.Before(now.Add(b.timeout))
	return r, r.ends
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
