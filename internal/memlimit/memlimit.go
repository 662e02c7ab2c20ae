package memlimit

import (
	"fmt"
	"math"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"
)

const (
	// DefaultHeadroom is the default Policy.Headroom, in percent of the live heap.
	DefaultHeadroom = 25
	// DefaultFloor is the default Policy.Floor: below it Go's default pacing (GOGC) alone
	// decides when to collect. An idle node's own memory (the runtime, its buffers and
	// connections) stays under it. It trades memory for the collector's CPU on a node
	// whose heap is small but busy (docs/performance.md, "The memory limit's floor"): 32
	// MiB let a node with 20 MiB of configuration (its values out of the heap) and mail
	// reach twice the data in VmRSS; 20 MiB took a node joining with 30,000 messages
	// from 12 to 20 CPU-seconds.
	DefaultFloor = 24 << 20
	// MaxHeadroom bounds Policy.Headroom: past GOGC's 100% the policy would never act.
	MaxHeadroom = 100
)

// Policy is how far above the memory in use the soft limit is kept.
type Policy struct {
	// Headroom is the share of the live heap, in percent, the heap may grow by before
	// the next collection. 0 turns the policy off (Go's defaults apply).
	Headroom int
	// Floor is the lowest limit ever set, in bytes.
	Floor int64
}

// DefaultPolicy returns the daemon's default policy.
func DefaultPolicy() Policy { return Policy{Headroom: DefaultHeadroom, Floor: DefaultFloor} }

// Validate reports a policy that cannot work, with what to do instead.
func (p Policy) Validate() error {
	if p.Headroom < 0 || p.Headroom > MaxHeadroom {
		return fmt.Errorf("memory headroom %d%%: use 0 (off) to %d", p.Headroom, MaxHeadroom)
	}
	if p.Floor < 0 {
		return fmt.Errorf("memory limit floor %d: must not be negative", p.Floor)
	}
	return nil
}

// Limit returns the limit the policy sets for the given live heap and memory outside the
// heap, in bytes.
func (p Policy) Limit(liveHeap, nonHeap uint64) int64 {
	grown := float64(liveHeap)*(1+float64(p.Headroom)/100) + float64(nonHeap)
	if grown >= math.MaxInt64 {
		return math.MaxInt64
	}
	return max(p.Floor, int64(grown))
}

// The runtime/metrics samples the policy reads after each collection.
const (
	metricLive     = "/gc/heap/live:bytes"
	metricTotal    = "/memory/classes/total:bytes"
	metricObjects  = "/memory/classes/heap/objects:bytes"
	metricUnused   = "/memory/classes/heap/unused:bytes"
	metricFree     = "/memory/classes/heap/free:bytes"
	metricReleased = "/memory/classes/heap/released:bytes"
)

// Governor applies a Policy after every garbage collection until Stop.
type Governor struct {
	policy  Policy
	stopped atomic.Bool
	mu      sync.Mutex // serializes update with Stop's restore
	samples []metrics.Sample
	prior   int64 // the limit before Start, restored by Stop
	last    atomic.Int64
}

// Start starts applying p to this process, and returns nil when the policy is off or the
// environment sets GOMEMLIMIT (the operator's limit stands). Only one Governor should run
// in a process: the limit is process-wide.
func Start(p Policy, logger hclog.Logger) (*Governor, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	if p.Headroom == 0 {
		logger.Info("memory limit policy off: Go's defaults apply")
		return nil, nil
	}
	if v, ok := os.LookupEnv("GOMEMLIMIT"); ok {
		logger.Info("memory limit from GOMEMLIMIT in the environment; no policy runs", "gomemlimit", v)
		return nil, nil
	}
	g := &Governor{policy: p, prior: debug.SetMemoryLimit(-1)}
	for _, name := range []string{metricLive, metricTotal, metricObjects, metricUnused, metricFree, metricReleased} {
		g.samples = append(g.samples, metrics.Sample{Name: name})
	}
	g.update()
	g.arm()
	logger.Info("memory limit policy", "headroom_pct", p.Headroom, "floor_mib", p.Floor>>20,
		"limit_mib", g.last.Load()>>20)
	return g, nil
}

// sentinel is an object made unreachable at once, whose cleanup runs after the next
// collection: one per cycle. It holds a pointer so that it is not a tiny allocation
// (those may share a block with live objects and never be collected).
type sentinel struct {
	_ *byte
	_ [16]byte
}

// arm schedules update after the next garbage collection, and arm again.
func (g *Governor) arm() {
	s := &sentinel{}
	runtime.AddCleanup(s, func(g *Governor) {
		if g.stopped.Load() {
			return
		}
		g.update()
		g.arm()
	}, g)
}

// update sets the limit from the last collection's live heap.
func (g *Governor) update() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.stopped.Load() {
		return
	}
	metrics.Read(g.samples)
	v := func(i int) uint64 {
		if g.samples[i].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return g.samples[i].Value.Uint64()
	}
	live, total := v(0), v(1)
	heap := v(2) + v(3) + v(4) + v(5)
	var nonHeap uint64
	if total > heap {
		nonHeap = total - heap
	}
	limit := g.policy.Limit(live, nonHeap)
	debug.SetMemoryLimit(limit)
	g.last.Store(limit)
}

// Limit returns the limit last set, in bytes.
func (g *Governor) Limit() int64 { return g.last.Load() }

// Stop stops the policy and restores the limit in force before Start.
func (g *Governor) Stop() {
	if g == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.stopped.Swap(true) {
		return
	}
	debug.SetMemoryLimit(g.prior)
}
