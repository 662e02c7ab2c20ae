package cluster

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/internal/ctxwait"
	"github.com/pmgcm/pmgcm/raftnode"
)

// Leadership is what forwarding needs to know of the local Raft node. The daemon
// implements it over whichever Raft instance runs now (a join replaces it).
type Leadership interface {
	// IsLeader reports whether this node is the master.
	IsLeader() bool
	// LeaderAddr returns the master's address, "" when none is known.
	LeaderAddr() string
	// LeaderChanged returns a channel closed at the next change of the known master.
	LeaderChanged() <-chan struct{}
	// SinceLeaderContact is the time since this node last heard from its master, -1
	// when it never has (or is the master).
	SinceLeaderContact() time.Duration
}

// ForwarderConfig configures a Forwarder. Fields are read once, by NewForwarder.
type ForwarderConfig struct {
	// Self is this node's own "ip:port".
	Self string
	// Raft is the local Raft node.
	Raft Leadership
	// Client sends the forwarded requests (the mux's ChanRPC client).
	Client *Client
	// HeartbeatTimeout is Raft's: a master not heard from within half of it may have
	// stopped.
	HeartbeatTimeout time.Duration
	// ElectionWait is how long an election may take; it bounds an idempotent attempt.
	ElectionWait time.Duration
	// NoQuorum describes, for the error when no master answers, which voters this node
	// reaches. Optional.
	NoQuorum func() string
}

// Forwarder sends master-only requests to the master.
type Forwarder struct {
	cfg ForwarderConfig
}

// NewForwarder returns a Forwarder for cfg.
func NewForwarder(cfg ForwarderConfig) *Forwarder {
	if cfg.NoQuorum == nil {
		cfg.NoQuorum = func() string { return "no master answered" }
	}
	return &Forwarder{cfg: cfg}
}

// Client returns the client the forwarder sends with.
func (f *Forwarder) Client() *Client { return f.cfg.Client }

// Apply forwards the encoded command cmd alone to the master (PathApply), found and
// retried as CallLeader does for a request that is not idempotent.
func (f *Forwarder) Apply(ctx context.Context, cmd []byte) (ApplyResult, error) {
	var out ApplyResult
	err := f.CallLeader(ctx, false, func(ctx context.Context, addr string) (err error) {
		out, err = f.cfg.Client.Apply(ctx, addr, cmd)
		return err
	})
	return out, err
}

// ForwardAnswerTimeout bounds the master's answer to a forwarded request that is not
// idempotent: longer than the two applies (5 s each) of the longest such request.
const ForwardAnswerTimeout = 12 * time.Second

// retryInterval is the pause before another attempt where no event announces the
// change awaited: a master not heard from lately, one not reached.
const retryInterval = 50 * time.Millisecond

// OnMaster runs a master-only operation: local while this node is the master, forward
// (to the master, through CallLeader) otherwise, until one of them answers. local
// returns an error wrapping ErrLostMaster when leadership moved before its first
// proposal; forward returns ErrSelfLeader when this node won an election meanwhile.
func OnMaster[T any](ctx context.Context, f *Forwarder, local, forward func() (T, error)) (T, error) {
	for {
		if f.cfg.Raft.IsLeader() {
			out, err := local()
			if !errors.Is(err, ErrLostMaster) {
				return out, err
			}
		}
		out, err := forward()
		if !errors.Is(err, ErrSelfLeader) {
			return out, err
		}
		// This node is the master again, or still is while it hands over (a leadership
		// transfer refuses proposals): look again shortly rather than spin.
		if err := ctxwait.Pause(ctx, 20*time.Millisecond); err != nil {
			return out, fmt.Errorf("%w: %v", raftnode.ErrNoLeader, err)
		}
	}
}

// CallLeader sends a request to the master: call is made with the master's address. It
// waits through an election, and retries a master that cannot be reached (one that just
// died is still named until the next election) until ctx ends, then reports the lost
// quorum (raftnode.ErrNoLeader). A request that may have reached the master is retried
// only if idempotent, so that a write never applies twice.
//
// A master this node has not heard from lately counts as none yet: it may have
// stopped, and the election is under way. Each attempt is bounded: a stopped master
// (SIGSTOP, a hung disk) keeps its connections open without answering. A non-idempotent
// request it took but did not answer fails with raftnode.ErrUnknownOutcome. Answers
// "not leader", "no quorum" and "shutting down" mean not applied: that node is not asked
// again until the known master changes (a handover or an election: LeaderChanged), or
// for an election's length, and then the next master is asked.
func (f *Forwarder) CallLeader(ctx context.Context, idempotent bool, call func(ctx context.Context, addr string) error) error {
	var (
		refused      string    // the node that answered it is no master (any more)
		refusedUntil time.Time // when it may be asked again without a change of master
	)
	for {
		changed := f.cfg.Raft.LeaderChanged() // before LeaderAddr: no change is missed
		addr := f.cfg.Raft.LeaderAddr()
		if addr != "" && addr == refused && time.Now().After(refusedUntil) {
			refused = ""
		}
		// What to wait for before the next look: a change of master (LeaderChanged), and
		// a timer only where a state can change that Raft announces with no event.
		var backstop time.Duration // 0: the change of master only
		switch {
		case addr == "":
			// An election is under way: LeaderChanged fires once a master is known.
		case addr == refused:
			backstop = time.Until(refusedUntil)
		case addr == f.cfg.Self:
			return ErrSelfLeader // this node won the election meanwhile: the caller acts locally
		case !f.leaderFresh():
			// A contact of the master comes with no event: look again shortly.
			backstop = retryInterval
		default:
			err, gaveUp := f.attempt(ctx, addr, f.attemptTimeout(idempotent), call)
			switch classify(err, idempotent) {
			case attemptDone:
				return err
			case attemptUnknown:
				// Sent, and not answered: the master may have applied it (it stopped, crashed
				// or was deposed after it took the request).
				why := gaveUp
				if why == nil {
					why = fmt.Errorf("the connection failed before it answered: %v", err)
				}
				return fmt.Errorf("%w: the master at %s took the request but %v", raftnode.ErrUnknownOutcome, addr, why)
			case attemptNotMaster:
				refused, refusedUntil = addr, time.Now().Add(f.cfg.ElectionWait)
				backstop = time.Until(refusedUntil)
			case attemptNotSent:
				// Not reached: a passing network fault ends with no event, a dead master
				// with an election (LeaderChanged). Try again shortly.
				backstop = retryInterval
			}
		}
		if err := waitChange(ctx, changed, backstop); err != nil {
			return f.noQuorum()
		}
		if refused != "" && f.cfg.Raft.LeaderAddr() != refused {
			refused = "" // the master changed: whoever it is now may be asked
		}
	}
}

// attemptResult is what a failed attempt of CallLeader means for the request.
type attemptResult int

const (
	// attemptDone: the master answered (success or a refusal of its own): pass it on.
	attemptDone attemptResult = iota
	// attemptNotSent: the request never reached the master, or was idempotent: try again.
	attemptNotSent
	// attemptNotMaster: the node answered, before it proposed anything, that it is no
	// master (not leader, no quorum, shutting down): ask the next master.
	attemptNotMaster
	// attemptUnknown: a write reached the master and no answer came: it may have been
	// applied, so it is never sent again.
	attemptUnknown
)

// classify says what the error of one attempt means: only a request provably not
// applied (never sent, or refused with an explicit not-master answer) or idempotent is
// tried again.
func classify(err error, idempotent bool) attemptResult {
	var re *RemoteError
	switch {
	case err == nil, !errors.As(err, &re):
		return attemptDone
	case re.E.Code == api.CodeUnreachable && (re.NotSent || idempotent):
		return attemptNotSent
	case re.E.Code == api.CodeUnreachable:
		return attemptUnknown
	case re.E.Code == api.CodeNotLeader || re.E.Code == api.CodeNoQuorum || re.E.Code == api.CodeShuttingDown:
		return attemptNotMaster
	}
	return attemptDone
}

// waitChange waits until changed fires or d has passed (d <= 0: no time limit); it
// returns ctx's error if ctx ends first. A nil changed (a Raft instance that closed,
// which a join replaces) never fires: then the wait is at most retryInterval, so that
// the instance that runs now is looked at.
func waitChange(ctx context.Context, changed <-chan struct{}, d time.Duration) error {
	if changed == nil && (d <= 0 || d > retryInterval) {
		d = retryInterval
	}
	var timeout <-chan time.Time
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-changed:
		return nil
	case <-timeout:
		return nil
	}
}

func (f *Forwarder) noQuorum() error {
	return fmt.Errorf("%w: no quorum: %s; see pmgcm promote", raftnode.ErrNoLeader, f.cfg.NoQuorum())
}

// attempt makes one call to the master at addr. It gives up when the master has not
// answered within limit, or once another master is elected: the reason is gaveUp (nil
// when it did not give up).
func (f *Forwarder) attempt(ctx context.Context, addr string, limit time.Duration, call func(context.Context, string) error) (err, gaveUp error) {
	actx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	changed := f.cfg.Raft.LeaderChanged()
	done := make(chan struct{})
	defer close(done)
	go func() {
		deadline := time.NewTimer(limit)
		defer deadline.Stop()
		for {
			// Checked after each (re)arming of changed, so that no election is missed.
			if now := f.cfg.Raft.LeaderAddr(); now != "" && now != addr {
				cancel(fmt.Errorf("did not answer before %s was elected master", now))
				return
			}
			select {
			case <-done:
				return
			case <-deadline.C:
				cancel(fmt.Errorf("did not answer within %s (it may have stopped)", limit))
				return
			case <-changed:
				changed = f.cfg.Raft.LeaderChanged()
			}
		}
	}()
	err = call(actx, addr)
	if ctx.Err() == nil {
		gaveUp = context.Cause(actx)
	}
	return err, gaveUp
}

// leaderFresh reports whether this node has heard from its master within half a
// heartbeat timeout; a live master contacts its followers about ten times as often.
func (f *Forwarder) leaderFresh() bool {
	since := f.cfg.Raft.SinceLeaderContact()
	return since >= 0 && since <= f.cfg.HeartbeatTimeout/2
}

// attemptTimeout bounds one attempt of a request forwarded to the master.
func (f *Forwarder) attemptTimeout(idempotent bool) time.Duration {
	if idempotent {
		return max(2*time.Second, f.cfg.ElectionWait)
	}
	return ForwardAnswerTimeout
}

// WaitLeaderAddr waits for a master to be known (an election in progress) until ctx
// ends, and returns its address.
func (f *Forwarder) WaitLeaderAddr(ctx context.Context) (string, error) {
	for {
		changed := f.cfg.Raft.LeaderChanged() // before LeaderAddr: no change is missed
		if addr := f.cfg.Raft.LeaderAddr(); addr != "" {
			return addr, nil
		}
		if err := waitChange(ctx, changed, 0); err != nil {
			return "", f.noQuorum()
		}
	}
}
