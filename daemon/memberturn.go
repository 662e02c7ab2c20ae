package daemon

import (
	"context"
	"fmt"
	"sync"
)

// memberTurn serializes the membership changes of the master (admit, delete, re-admit,
// the voter policy, a leadership transfer, forced recovery, certificate records, the
// cluster version): each checks the member list and the Raft configuration, then commits
// what follows from them, and the next one must see what the last one committed. They
// run one at a time, in turn.
//
// It is not a mutex held across the commit. A change waits for its turn as long as its
// context allows (a caller's deadline, a leader term's end) and then gives up having
// changed nothing, with ErrBusy: a slow or stuck apply (a disk stall, a lost quorum)
// delays the next membership change only until that change's deadline, never forever,
// and a leader duty waiting for its turn returns as soon as its term ends (forced
// recovery waits for that). Nothing that only reads (status, linearizable reads,
// join-cmd, the mail path) or writes configuration takes a turn.
//
// The zero value is ready to use; a memberTurn must not be copied after first use.
type memberTurn struct {
	once sync.Once
	ch   chan struct{} // holds a token while a change has the turn
}

func (t *memberTurn) slot() chan struct{} {
	t.once.Do(func() { t.ch = make(chan struct{}, 1) })
	return t.ch
}

// take waits for the turn until ctx ends. It returns the function that ends the turn
// (call it exactly once), or, if ctx ended first, an ErrBusy error that wraps ctx's
// error. A free turn is taken even if ctx has ended already.
func (t *memberTurn) take(ctx context.Context) (release func(), err error) {
	ch := t.slot()
	select {
	case ch <- struct{}{}:
		return t.releaser(ch), nil
	default:
	}
	select {
	case ch <- struct{}{}:
		return t.releaser(ch), nil
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: another membership change is still being committed on the master and this one gave up waiting for it (%w); nothing was changed: try again",
			ErrBusy, context.Cause(ctx))
	}
}

// releaser returns the function that ends a turn; a second call does nothing.
func (t *memberTurn) releaser(ch chan struct{}) func() {
	var once sync.Once
	return func() { once.Do(func() { <-ch }) }
}
