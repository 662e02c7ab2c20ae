package cli

import (
	"fmt"
	"io"
	"sync"
	"time"
)

// transferEvery is the least time between two updates of a transfer's progress line.
const transferEvery = 100 * time.Millisecond

// transfer shows how many bytes of a backup or restore have gone through, on one line of
// stderr rewritten in place. It exists only when stderr is a terminal: elsewhere (a
// script, a log) the commands print their usual lines and nothing more. A nil *transfer
// does nothing. Its methods may be called from any goroutine (the HTTP client reads a
// request body in its own).
type transfer struct {
	mu     sync.Mutex
	p      *progress
	what   string // "backup: %s received"; %s is the bytes so far
	total  int64  // bytes expected; 0 when unknown
	approx bool   // total is an estimate (a backup's): shown with "~", at most 99%
	n      int64
	lastAt time.Time
	// ended is set by done: a read after it (the HTTP client may still be sending a body
	// the daemon refused) no longer shows.
	ended bool
}

// newTransfer returns the progress of a transfer of total bytes (0: unknown), described by
// what, whose %s is replaced by the amount so far; nil when stderr is no terminal.
func (a *app) newTransfer(what string, total int64) *transfer {
	if !a.stderrTTY {
		return nil
	}
	return &transfer{p: &progress{w: a.stderr, live: true}, what: what, total: total}
}

// reader returns r counting what is read through it.
func (t *transfer) reader(r io.Reader) io.Reader {
	if t == nil {
		return r
	}
	return &countingReader{r: r, t: t}
}

func (t *transfer) add(n int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.n += int64(n)
	if t.ended {
		return
	}
	if now := time.Now(); now.Sub(t.lastAt) >= transferEvery {
		t.lastAt = now
		t.showLocked()
	}
}

func (t *transfer) showLocked() {
	amount := formatBytes(t.n)
	switch {
	case t.total > 0 && t.approx:
		amount = fmt.Sprintf("%s of ~%s (%d%%)", amount, formatBytes(t.total), min(99, t.n*100/t.total))
	case t.total > 0:
		amount = fmt.Sprintf("%s of %s (%d%%)", amount, formatBytes(t.total), t.n*100/t.total)
	}
	t.p.show(fmt.Sprintf(t.what, amount))
}

// done shows the final count and ends the line, so that what follows starts a line of
// its own. It is also right after a failed transfer: the line shows how far it got.
func (t *transfer) done() {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ended {
		return
	}
	t.ended = true
	if t.approx {
		t.total = 0 // the estimate is past: show what went through
	}
	t.showLocked()
	t.p.end()
}

type countingReader struct {
	r io.Reader
	t *transfer
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	if n > 0 {
		c.t.add(n)
	}
	return n, err
}

// formatBytes says n bytes in B, KiB, MiB or GiB.
func formatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, suffix := float64(n)/unit, "KiB"
	for _, s := range []string{"MiB", "GiB", "TiB"} {
		if v < unit {
			break
		}
		v, suffix = v/unit, s
	}
	return fmt.Sprintf("%.1f %s", v, suffix)
}

// estimate takes the expected size of a backup stream from it, when it says.
func (t *transfer) estimate(rc any) {
	e, ok := rc.(interface{ EstimatedSize() int64 })
	if t == nil || !ok || e.EstimatedSize() <= 0 {
		return
	}
	t.mu.Lock()
	t.total, t.approx = e.EstimatedSize(), true
	t.mu.Unlock()
}
