package daemon

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

// The join throttle: wrong join tokens back off per source address (an IPv6 caller's
// /64). A source may give
// joinFreeFailures wrong tokens; from then on each wrong token refuses the source for
// twice as long as the one before (joinBackoffBase, 2x, 4x, ... at most joinBackoffMax),
// during which every join request from it is refused at once (ErrThrottled) without
// looking at the token. A right token clears the source's count; so does
// joinFailureMemory without a wrong one.
const (
	joinFreeFailures  = 5
	joinBackoffBase   = time.Second
	joinBackoffMax    = 10 * time.Minute
	joinFailureMemory = time.Hour
	// maxJoinSources bounds the sources remembered; beyond it the one idle longest is
	// forgotten.
	maxJoinSources = 4096
	// joinLogInterval is how often the throttle's refusals are summed up in the log.
	joinLogInterval = 10 * time.Second
)

// joinThrottle counts wrong join tokens per source address and logs them briefly: the
// first of an interval at once, the rest as one summary line at its end. It is safe for
// concurrent use.
type joinThrottle struct {
	logger hclog.Logger
	now    func() time.Time

	mu      sync.Mutex
	sources map[netip.Addr]*joinFailures
	// The log of the interval that runs (timer set), and what it has not logged yet.
	timer           *time.Timer
	closed          bool
	wrong, throttle int
	logged          map[netip.Addr]int
}

// joinFailures is one source's record.
type joinFailures struct {
	n     int       // wrong tokens in a row
	last  time.Time // of the last wrong token
	until time.Time // refused until then
}

func newJoinThrottle(logger hclog.Logger) *joinThrottle {
	return &joinThrottle{logger: logger, now: time.Now, sources: map[netip.Addr]*joinFailures{},
		logged: map[netip.Addr]int{}}
}

// check refuses src while it backs off.
func (t *joinThrottle) check(src netip.Addr) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	f, ok := t.sources[src]
	now := t.now()
	if !ok || !now.Before(f.until) {
		return nil
	}
	t.note(src, false)
	return fmt.Errorf("%w (%s): %d in a row; refused for %s more",
		ErrThrottled, sourceName(src), f.n, f.until.Sub(now).Round(time.Second))
}

// failed counts a wrong token from src.
func (t *joinThrottle) failed(src netip.Addr) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	f, ok := t.sources[src]
	if ok && now.Sub(f.last) > joinFailureMemory {
		f.n = 0
	}
	if !ok {
		t.makeRoom(now)
		f = &joinFailures{}
		t.sources[src] = f
	}
	f.n++
	f.last = now
	if f.n >= joinFreeFailures {
		f.until = now.Add(backoff(f.n - joinFreeFailures))
	}
	t.note(src, true)
}

// backoff is the refusal after the k-th wrong token beyond the free ones (k from 0).
func backoff(k int) time.Duration {
	if k >= 20 {
		return joinBackoffMax
	}
	return min(joinBackoffBase<<k, joinBackoffMax)
}

// succeeded clears src's record: it gave a right token.
func (t *joinThrottle) succeeded(src netip.Addr) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.sources, src)
}

// makeRoom forgets sources idle for joinFailureMemory, and if the table is still full
// the one idle longest. The caller holds mu.
func (t *joinThrottle) makeRoom(now time.Time) {
	if len(t.sources) < maxJoinSources {
		return
	}
	var oldest netip.Addr
	var oldestAt time.Time
	for a, f := range t.sources {
		if now.Sub(f.last) > joinFailureMemory && !now.Before(f.until) {
			delete(t.sources, a)
			continue
		}
		if oldestAt.IsZero() || f.last.Before(oldestAt) {
			oldest, oldestAt = a, f.last
		}
	}
	if len(t.sources) >= maxJoinSources {
		delete(t.sources, oldest)
	}
}

// note logs a wrong token (wrong) or a throttled request from src: the first of an
// interval at once, the others in the summary at its end. The caller holds mu.
func (t *joinThrottle) note(src netip.Addr, wrong bool) {
	if t.timer == nil && !t.closed {
		t.timer = time.AfterFunc(joinLogInterval, t.flush)
		if wrong {
			t.logger.Warn("join refused: wrong token", "source", sourceName(src),
				"free-tries", joinFreeFailures, "summary-every", joinLogInterval)
		} else {
			t.logger.Warn("join refused: the source gave too many wrong tokens", "source", sourceName(src),
				"summary-every", joinLogInterval)
		}
		return
	}
	if wrong {
		t.wrong++
	} else {
		t.throttle++
	}
	if _, ok := t.logged[src]; ok || len(t.logged) < maxTrackedJoinSources {
		t.logged[src]++
	}
}

// maxTrackedJoinSources bounds the sources one summary line counts.
const maxTrackedJoinSources = 1024

// flush writes the summary of the interval that ends, and keeps the interval running
// while there is something to sum up.
func (t *joinThrottle) flush() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.timer = nil
	if t.logSummary() && !t.closed {
		t.timer = time.AfterFunc(joinLogInterval, t.flush)
	}
}

// logSummary logs what the interval counted and reports whether there was anything.
// The caller holds mu.
func (t *joinThrottle) logSummary() bool {
	if t.wrong+t.throttle == 0 {
		return false
	}
	var top netip.Addr
	topN := 0
	for a, n := range t.logged {
		if n > topN || (n == topN && a.Less(top)) {
			top, topN = a, n
		}
	}
	t.logger.Warn("join requests refused", "wrong-token", t.wrong, "throttled", t.throttle,
		"sources", len(t.logged), "top-source", sourceName(top), "top-source-refused", topN,
		"interval", joinLogInterval)
	t.wrong, t.throttle = 0, 0
	clear(t.logged)
	return true
}

// close logs what is pending and stops the timer. It is idempotent.
func (t *joinThrottle) close() {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return
	}
	t.closed = true
	if t.timer != nil {
		t.timer.Stop()
		t.timer = nil
	}
	t.logSummary()
}

func sourceName(a netip.Addr) string {
	if !a.IsValid() {
		return "unknown"
	}
	return a.String()
}

// joinSourceKey is the context key of the join channel's caller address.
type joinSourceKey struct{}

// withJoinSource puts the caller's address in each join request's context, where admit
// finds it (joinSource).
func withJoinSource(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var src netip.Addr
		if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
			if a, err := netip.ParseAddr(host); err == nil {
				src = throttleKey(a)
			}
		}
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), joinSourceKey{}, src)))
	})
}

// throttleKey is the source a join request counts against: the IPv4 address, or the
// /64 of an IPv6 one (a host is given a /64 and picks addresses in it at will).
func throttleKey(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if a.Is6() {
		return netip.PrefixFrom(a, 64).Masked().Addr()
	}
	return a
}

// joinSource returns the caller address withJoinSource recorded, and false on a request
// that did not come over the join channel.
func joinSource(ctx context.Context) (netip.Addr, bool) {
	a, ok := ctx.Value(joinSourceKey{}).(netip.Addr)
	return a, ok
}
