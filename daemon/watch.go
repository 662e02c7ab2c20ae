package daemon

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/fsm"
)

// Long-poll bounds of a watch.
const (
	defaultWatchWait = 25 * time.Second
	maxWatchWait     = 5 * time.Minute
)

// watcher owns the configuration watch (GET /config/watch): long polls for the changes
// under a prefix, answered from this node's own state machine.
type watcher struct {
	fsm *fsm.FSM
	// checkServing refuses while this node is removed or fenced (Daemon.checkServing).
	checkServing func() error
	// waitApplied waits until the state machine has applied an index (raftSlot.waitApplied).
	waitApplied func(ctx context.Context, index uint64) error
}

// newWatcher returns the configuration watcher of d, whose fsm is made.
func newWatcher(d *Daemon) *watcher {
	return &watcher{fsm: d.fsm, checkServing: d.checkServing, waitApplied: d.raft.waitApplied}
}

// handleConfigWatch answers the changes under a prefix above a version, waiting until
// there is one or the wait runs out. It reads this node's own state: a watcher that
// moves to another node, or sees this one restart, resumes from its last Next without a
// gap, since every node applies the same log.
func (cw *watcher) handleConfigWatch(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	prefix := q.Get("prefix")
	var from uint64
	if s := q.Get("from"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			writeErr(w, fmt.Errorf("%w: from %q is not a version number", ErrBadRequest, s))
			return
		}
		from = v
	}
	wait := defaultWatchWait
	if s := q.Get("wait"); s != "" {
		v, err := time.ParseDuration(s)
		if err != nil || v < 0 {
			writeErr(w, fmt.Errorf("%w: wait %q is not a duration", ErrBadRequest, s))
			return
		}
		wait = min(v, maxWatchWait)
	}
	if err := cw.checkServing(); err != nil {
		writeErr(w, err)
		return
	}
	resp, err := cw.watch(r.Context(), prefix, from, wait)
	reply(w, resp, err)
}

// watch waits for changes under prefix above from, for at most wait.
func (cw *watcher) watch(ctx context.Context, prefix string, from uint64, wait time.Duration) (*api.WatchResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	for {
		// idx is read before the query: every change the query misses has a version
		// above both idx and the newest event, so Next leaves no gap.
		idx := cw.fsm.AppliedIndex()
		changes, reset, err := cw.fsm.Changes(prefix, from)
		if err != nil {
			return nil, err
		}
		if len(changes) > 0 || reset {
			resp := &api.WatchResponse{Events: make([]api.WatchEvent, 0, len(changes)), Next: max(from, idx), Reset: reset}
			for _, c := range changes {
				resp.Events = append(resp.Events, watchEvent(c))
				resp.Next = max(resp.Next, c.Version)
			}
			return resp, nil
		}
		// Across Raft instances: one being replaced (join, sync) is waited out.
		err = cw.waitApplied(ctx, idx+1)
		switch {
		case err == nil:
		case ctx.Err() != nil:
			return &api.WatchResponse{Events: []api.WatchEvent{}, Next: max(from, idx)}, nil
		default:
			// ErrClosed: the daemon stops. (A Raft restart in place, for a join or a sync,
			// does not end the wait: raftnode's waiters survive it.)
			return nil, err
		}
	}
}

func watchEvent(c fsm.Change) api.WatchEvent {
	ev := api.WatchEvent{Key: c.Key, Version: c.Version, Deleted: c.Deleted}
	if !c.Deleted {
		ev.Value, ev.ValueBase64 = encodeValue(c.Value)
	}
	return ev
}

// encodeValue puts a value into JSON as a string when it is UTF-8, else as base64.
func encodeValue(v []byte) (*string, string) {
	if utf8.Valid(v) {
		s := string(v)
		return &s, ""
	}
	return nil, base64.StdEncoding.EncodeToString(v)
}
