package memlimit

import (
	"fmt"
	"math"
	"runtime"
	"runtime/debug"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/internal/testutil"
)

func TestPolicyLimit(t *testing.T) {
	p := Policy{Headroom: 25, Floor: 32 << 20}
	for _, tc := range []struct {
		live, nonHeap uint64
		want          int64
	}{
		{0, 0, 32 << 20},                             // the floor
		{10 << 20, 5 << 20, 32 << 20},                // small: Go's pacing alone
		{100 << 20, 8 << 20, 125<<20 + 8<<20},        // live + 25% + outside the heap
		{math.MaxUint64, 0, math.MaxInt64},           // no overflow
		{256 << 20, 0, 320 << 20},                    // never below the live heap
		{40 << 20, 1 << 20, 50<<20 + 1<<20},          // just over the floor
		{1 << 20, math.MaxUint64 / 2, math.MaxInt64}, // no overflow outside the heap either
	} {
		if got := p.Limit(tc.live, tc.nonHeap); got != tc.want {
			t.Errorf("Limit(%d, %d) = %d, want %d", tc.live, tc.nonHeap, got, tc.want)
		}
	}
}

func TestPolicyValidate(t *testing.T) {
	for _, p := range []Policy{{Headroom: -1}, {Headroom: MaxHeadroom + 1}, {Headroom: 10, Floor: -1}} {
		if err := p.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil, want an error", p)
		}
	}
	for _, p := range []Policy{DefaultPolicy(), {Headroom: 0}, {Headroom: MaxHeadroom, Floor: 0}} {
		if err := p.Validate(); err != nil {
			t.Errorf("Validate(%+v) = %v", p, err)
		}
	}
}

func TestOffOrEnvironmentStartsNothing(t *testing.T) {
	if g, err := Start(Policy{Headroom: 0}, nil); g != nil || err != nil {
		t.Fatalf("Start(off) = %v, %v; want nil, nil", g, err)
	}
	t.Setenv("GOMEMLIMIT", "1GiB")
	if g, err := Start(DefaultPolicy(), nil); g != nil || err != nil {
		t.Fatalf("Start with GOMEMLIMIT set = %v, %v; want nil, nil", g, err)
	}
	if _, err := Start(Policy{Headroom: -5}, nil); err == nil {
		t.Fatal("Start(headroom -5) = nil error")
	}
}

// hold keeps a large pointer-free block live while the test needs it.
var hold []byte

// TestGovernorFollowsLiveHeap: the limit rises with the live heap after a collection
// (never below it: no collection without end) and falls back once it is freed, and Stop
// puts back the limit of before.
func TestGovernorFollowsLiveHeap(t *testing.T) {
	prior := debug.SetMemoryLimit(-1)
	const floor = 16 << 20
	g, err := Start(Policy{Headroom: 25, Floor: floor}, nil)
	if err != nil || g == nil {
		t.Fatalf("Start = %v, %v", g, err)
	}
	defer func() {
		g.Stop()
		if got := debug.SetMemoryLimit(-1); got != prior {
			t.Errorf("after Stop the limit is %d, want the prior %d", got, prior)
		}
	}()

	const big = 96 << 20
	hold = make([]byte, big)
	for i := range hold {
		hold[i] = byte(i)
	}
	testutil.Poll(t, "the limit to follow a 96 MiB live heap", 10*time.Second, func() error {
		runtime.GC() // each collection runs the policy once, after it
		if l := debug.SetMemoryLimit(-1); l < big+big/4 {
			return fmt.Errorf("limit %d MiB, want at least %d MiB", l>>20, (big+big/4)>>20)
		}
		return nil
	})
	hold = nil
	testutil.Poll(t, "the limit to fall back once the 96 MiB are freed", 10*time.Second, func() error {
		runtime.GC()
		if l := debug.SetMemoryLimit(-1); l >= big {
			return fmt.Errorf("limit %d MiB, want under %d MiB", l>>20, big>>20)
		}
		return nil
	})
	if g.Limit() < floor {
		t.Fatalf("limit %d under the floor %d", g.Limit(), floor)
	}
}
