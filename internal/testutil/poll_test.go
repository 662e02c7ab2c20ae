package testutil

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// fakeTB records Fatal instead of ending the test, to test Poll's failure.
type fakeTB struct {
	testing.TB
	fatal string
}

func (f *fakeTB) Helper()           {}
func (f *fakeTB) Fatal(args ...any) { f.fatal = fmt.Sprint(args...) }

func TestPollReturnsWhenTheConditionHolds(t *testing.T) {
	calls := 0
	f := &fakeTB{TB: t}
	Poll(f, "third call", 5*time.Second, func() error {
		if calls++; calls < 3 {
			return fmt.Errorf("call %d", calls)
		}
		return nil
	})
	if f.fatal != "" || calls != 3 {
		t.Fatalf("fatal %q after %d calls", f.fatal, calls)
	}
}

func TestPollFailsWithTheLastErrorAfterTheTimeout(t *testing.T) {
	f := &fakeTB{TB: t}
	calls := 0
	start := time.Now()
	Poll(f, "never", 100*time.Millisecond, func() error { calls++; return fmt.Errorf("seen %d", calls) })
	if d := time.Since(start); d < 100*time.Millisecond || d > 2*time.Second {
		t.Fatalf("gave up after %s", d)
	}
	if want := fmt.Sprintf("never: not reached within 100ms: seen %d", calls); f.fatal != want {
		t.Fatalf("fatal %q, want %q", f.fatal, want)
	}
	if calls < 5 {
		t.Fatalf("only %d attempts in 100ms", calls)
	}
}

func TestWaitStopsAtOnce(t *testing.T) {
	errGone := errors.New("the daemon exited")
	calls := 0
	err := Wait(context.Background(), "state A", time.Minute, func() error { calls++; return Stop(errGone) })
	if !errors.Is(err, errGone) || calls != 1 || !strings.HasPrefix(err.Error(), "state A: ") {
		t.Fatalf("err %v after %d calls", err, calls)
	}
}

func TestWaitEndsWithTheContext(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := Wait(ctx, "never", time.Minute, func() error { return errNotYet })
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v", err)
	}
}

func TestCond(t *testing.T) {
	ok := false
	fn := Cond(func() bool { return ok })
	if err := fn(); err == nil {
		t.Fatal("a false condition passed")
	}
	ok = true
	if err := fn(); err != nil {
		t.Fatal(err)
	}
}

func TestWaitEveryKeepsItsInterval(t *testing.T) {
	var at []time.Time
	_ = WaitEvery(context.Background(), "never", 200*time.Millisecond, 50*time.Millisecond, func() error {
		at = append(at, time.Now())
		return errNotYet
	})
	if len(at) < 3 || len(at) > 6 {
		t.Fatalf("%d attempts in 200ms at a 50ms interval", len(at))
	}
	for i := 1; i < len(at); i++ {
		if d := at[i].Sub(at[i-1]); d < 50*time.Millisecond {
			t.Fatalf("attempt %d came %s after the one before", i, d)
		}
	}
}
