package connlimit

import (
	"errors"
	"net/netip"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

// maxTrackedSources bounds the per-source counts a refusal summary keeps; refusals from
// further sources are counted in the totals only.
const maxTrackedSources = 1024

// refusalLog sums up refusals: the first refusal after a quiet interval is logged at
// once, the rest as one line at the end of each interval in which there were any.
type refusalLog struct {
	logger   hclog.Logger
	name     string
	max, per int
	interval time.Duration

	mu        sync.Mutex
	timer     *time.Timer // set while an interval is running
	closed    bool
	overTotal int
	overPer   int
	sources   map[netip.Addr]int
}

func newRefusalLog(logger hclog.Logger, name string, max, per int, interval time.Duration) *refusalLog {
	return &refusalLog{logger: logger, name: name, max: max, per: per, interval: interval,
		sources: make(map[netip.Addr]int)}
}

// add counts one refusal from src for reason.
func (r *refusalLog) add(src netip.Addr, reason error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.timer == nil && !r.closed {
		// The first of an interval: say so at once, sum up the rest at its end.
		r.timer = time.AfterFunc(r.interval, r.flush)
		r.logger.Warn("refusing connections over the cap", "listener", r.name,
			"reason", reasonText(reason), "source", sourceText(src), "max", r.max,
			"max-per-source", r.per, "summary-every", r.interval)
		return
	}
	if errors.Is(reason, ErrTotal) {
		r.overTotal++
	} else {
		r.overPer++
	}
	if _, ok := r.sources[src]; ok || len(r.sources) < maxTrackedSources {
		r.sources[src]++
	}
}

// flush logs the summary of the interval that ends; with no refusals in it, the next
// refusal starts a new interval.
func (r *refusalLog) flush() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.timer = nil
	r.logSummary()
}

func (r *refusalLog) logSummary() {
	n := r.overTotal + r.overPer
	if n == 0 {
		return
	}
	var top netip.Addr
	topN := 0
	for a, c := range r.sources {
		if c > topN || (c == topN && a.Less(top)) {
			top, topN = a, c
		}
	}
	r.logger.Warn("connections refused over the cap", "listener", r.name, "refused", n,
		"over-max", r.overTotal, "over-max-per-source", r.overPer, "sources", len(r.sources),
		"top-source", sourceText(top), "top-source-refused", topN, "max", r.max,
		"max-per-source", r.per, "interval", r.interval)
	r.overTotal, r.overPer = 0, 0
	clear(r.sources)
	// Keep the interval running: the next line comes at its end, however many refusals.
	if !r.closed {
		r.timer = time.AfterFunc(r.interval, r.flush)
	}
}

// close logs what is pending and stops the timer.
func (r *refusalLog) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	r.closed = true
	if r.timer != nil {
		r.timer.Stop()
		r.timer = nil
	}
	r.logSummary()
}

func reasonText(err error) string {
	if errors.Is(err, ErrTotal) {
		return "max"
	}
	return "max-per-source"
}

func sourceText(a netip.Addr) string {
	if !a.IsValid() {
		return "local"
	}
	return a.String()
}
