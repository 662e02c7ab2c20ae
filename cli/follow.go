package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/pmgcm/pmgcm/api"
)

// catchUpTiming paces the following of a catch-up (`pmgcm join`, `pmgcm sync`); tests
// shorten it.
type catchUpTiming struct {
	// pollEvery is the pause between status calls.
	pollEvery time.Duration
	// statusTimeout bounds one status call (and --timeout, when shorter).
	statusTimeout time.Duration
	// progressEvery is the least time between progress lines when not on a terminal.
	progressEvery time.Duration
}

func (t catchUpTiming) withDefaults() catchUpTiming {
	if t.pollEvery <= 0 {
		t.pollEvery = 250 * time.Millisecond
	}
	if t.statusTimeout <= 0 {
		t.statusTimeout = 2 * time.Second
	}
	if t.progressEvery <= 0 {
		t.progressEvery = time.Second
	}
	return t
}

// catchUp says what followCatchUp waits for and how it words the end.
type catchUp struct {
	// row returns the local node's row once a status shows the node where the command put
	// it (cluster, CID, epoch); nil for a status from before.
	row func(st *api.Status) *api.Node
	// done is printed once the row is a full member; its verbs take name, CID and state.
	done string
	// background completes "the node goes on ... in the background" when the operator
	// stops following.
	background string
	// stuck, when set, says why the node is not a full member when --wait runs out and
	// what to do, from the last status that showed its row.
	stuck func(st *api.Status, n *api.Node) string
}

// followCatchUp polls the status until the local node is a full member (state A, with a
// role), printing progress, for at most wait. Errors of single status calls are transient:
// the daemon may be busy installing the cluster's state.
func (a *app) followCatchUp(ctx context.Context, c API, cu catchUp, wait time.Duration) error {
	tm := a.timing.withDefaults()
	callTimeout := tm.statusTimeout
	if a.timeout > 0 && a.timeout < callTimeout {
		callTimeout = a.timeout
	}
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	p := &progress{w: a.stdout, live: a.term != nil && a.stdoutTTY, every: tm.progressEvery}
	tick := time.NewTicker(tm.pollEvery)
	defer tick.Stop()

	var lastErr error
	var lastSt *api.Status
	var lastRow *api.Node
	for {
		sctx, scancel := context.WithTimeout(wctx, callTimeout)
		st, err := c.Status(sctx)
		scancel()
		switch {
		case err != nil:
			if wctx.Err() == nil {
				lastErr = err
			}
		case st != nil:
			lastErr = nil
			if n := cu.row(st); n != nil {
				lastSt, lastRow = st, n
				if isFullMember(n) {
					p.end()
					_, err := fmt.Fprintf(a.stdout, cu.done, n.Name, n.CID, n.State)
					return err
				}
				p.show(catchUpLine(st, n))
			}
		}
		select {
		case <-wctx.Done():
			p.end()
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("stopped following the catch-up; the node goes on %s in the "+
					"background: see pmgcm status: %w", cu.background, err)
			}
			msg := fmt.Sprintf("not in sync after %s: see pmgcm status", wait)
			if cu.stuck != nil && lastRow != nil {
				msg = cu.stuck(lastSt, lastRow)
			}
			if lastErr != nil {
				// %v, not %w: a timed-out status call must not read as a timeout of the command.
				return fmt.Errorf("%s\nlast status error: %v", msg, oneLine(lastErr.Error()))
			}
			return errors.New(msg)
		case <-tick.C:
		}
	}
}

// localRow returns the row of the node that answered the status, or nil.
func localRow(st *api.Status) *api.Node {
	for i := range st.Nodes {
		if n := &st.Nodes[i]; n.Local {
			return n
		}
	}
	return nil
}

// isFullMember reports whether the node's row shows it active and with a role.
func isFullMember(n *api.Node) bool {
	return n.State == api.StateActive && n.Role != "" && n.Role != api.RoleNone
}

// catchUpLine says how far the local node n has applied the log, against the master's last
// index when the status has a master row.
func catchUpLine(st *api.Status, n *api.Node) string {
	line := fmt.Sprintf("catching up: applied index %d", n.AppliedIndex)
	var leader uint64
	if st.Cluster != nil {
		leader = st.Cluster.LeaderCID
	}
	for _, m := range st.Nodes {
		if m.Role == api.RoleMaster && (leader == 0 || m.CID == leader) && m.LastIndex > 0 {
			return line + fmt.Sprintf(" of %d", m.LastIndex)
		}
	}
	return line
}

// progress prints the catch-up: on a terminal one line rewritten in place, otherwise one
// line per change at most every `every`.
type progress struct {
	w     io.Writer
	live  bool
	every time.Duration

	last   string
	lastAt time.Time
	width  int // length of the live line on screen; 0 when none
}

func (p *progress) show(line string) {
	if line == p.last {
		return
	}
	if p.live {
		pad := max(0, p.width-len(line))
		fmt.Fprintf(p.w, "\r%s%s", line, strings.Repeat(" ", pad))
		p.last, p.width = line, len(line)
		return
	}
	now := time.Now()
	if !p.lastAt.IsZero() && now.Sub(p.lastAt) < p.every {
		return
	}
	fmt.Fprintln(p.w, line)
	p.last, p.lastAt = line, now
}

// end finishes the live line, so that what follows starts on a line of its own.
func (p *progress) end() {
	if p.live && p.width > 0 {
		fmt.Fprintln(p.w)
		p.width = 0
	}
}
