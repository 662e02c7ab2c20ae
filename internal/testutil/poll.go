// Package testutil is what every test package of the project shares: one poll-with-deadline
// helper (Poll, with Wait and WaitEvery for code without a testing.TB) and one loopback address and port allocator (IPs, FreePort, FreePorts).
// The benchmark (cmd/pmgcm-bench), which drives real daemons like the integration tests, uses
// it too. It imports nothing of the project's, so that any package's tests may import it.
package testutil

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// maxInterval is the longest pause between two attempts of a poll. The pause starts at a
// millisecond and doubles, so a condition that holds soon is seen soon, and one that takes
// seconds costs at most one attempt per maxInterval.
const maxInterval = 20 * time.Millisecond

// Poll calls fn until it returns nil, and fails the test if timeout passes first, with fn's
// last error. what names the awaited state in the failure ("node2 in state A"). fn returns
// Stop(err) to fail the test at once, when the state can no longer come (the daemon exited).
// Poll is the way a test waits for a state; a time.Sleep is not.
func Poll(t testing.TB, what string, timeout time.Duration, fn func() error) {
	t.Helper()
	if err := Wait(context.Background(), what, timeout, fn); err != nil {
		t.Fatal(err)
	}
}

// Wait calls fn until it returns nil (Wait returns nil), timeout passes (an error that names
// what and wraps fn's last error), ctx ends (ctx's error), or fn returns Stop(err) (err).
// It is Poll for code that has no testing.TB, such as the benchmark.
func Wait(ctx context.Context, what string, timeout time.Duration, fn func() error) error {
	return wait(ctx, what, timeout, time.Millisecond, maxInterval, fn)
}

// WaitEvery is Wait with a fixed pause between attempts, for a measurement: the time until
// the state holds is then known to within interval.
func WaitEvery(ctx context.Context, what string, timeout, interval time.Duration, fn func() error) error {
	return wait(ctx, what, timeout, interval, interval, fn)
}

func wait(ctx context.Context, what string, timeout, pause, maxPause time.Duration, fn func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return nil
		}
		var stop stopError
		if errors.As(err, &stop) {
			return fmt.Errorf("%s: %w", what, stop.err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not reached within %s: %w", what, timeout, err)
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%s: %w", what, ctx.Err())
		case <-t.C:
		}
		pause = min(2*pause, maxPause)
	}
}

// Stop wraps err so that Poll and Wait give up at once with it instead of trying again.
func Stop(err error) error { return stopError{err} }

type stopError struct{ err error }

func (e stopError) Error() string { return e.err.Error() }
func (e stopError) Unwrap() error { return e.err }

// Cond adapts a condition to Poll: the returned function fails ("not yet") while cond is false.
// Prefer a function that returns an error saying what it saw, when there is something to say.
func Cond(cond func() bool) func() error {
	return func() error {
		if !cond() {
			return errNotYet
		}
		return nil
	}
}

var errNotYet = errors.New("condition still false")
