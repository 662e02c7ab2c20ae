package cli

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/spf13/cobra"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/api/client"
)

// watchTiming paces `pmgcm config watch`; tests shorten it.
type watchTiming struct {
	// wait is how long the daemon holds a poll open when nothing changes (wait=).
	wait time.Duration
	// slack is added to wait to bound one poll request: the daemon answers by wait.
	slack time.Duration
	// backoffMin and backoffMax bound the pause after a failed poll; it doubles from
	// backoffMin with each failure in a row.
	backoffMin, backoffMax time.Duration
	// errorEvery is the least time between two "retrying" lines.
	errorEvery time.Duration
}

func (t watchTiming) withDefaults() watchTiming {
	if t.wait <= 0 {
		t.wait = 25 * time.Second
	}
	if t.slack <= 0 {
		t.slack = 10 * time.Second
	}
	if t.backoffMin <= 0 {
		t.backoffMin = 100 * time.Millisecond
	}
	if t.backoffMax <= 0 {
		t.backoffMax = 2 * time.Second
	}
	if t.errorEvery <= 0 {
		t.errorEvery = time.Second
	}
	return t
}

// configWatchOptions are the arguments of `pmgcm config watch`.
type configWatchOptions struct {
	prefix string
	from   versionFlag
	once   bool
	output outputFormat
}

func (a *app) configWatchCmd() *cobra.Command {
	var opts configWatchOptions
	cmd := &cobra.Command{
		Use:   "watch [PREFIX]",
		Short: "Print the changes of the keys starting with PREFIX as they happen",
		Long: `Print the changes of the configuration keys starting with PREFIX (all keys without
PREFIX) as they happen, one line per change, until interrupted (Ctrl-C):

  VERSION KEY set SIZE bytes
  VERSION KEY deleted

With -o json, print each change as one JSON object per line: {"key", "version",
"deleted"} for a deletion, {"key", "version", "value"} (or "value_base64" when the value
is not valid UTF-8) otherwise.

The output coalesces changes: a key changed several times between two polls shows only
its latest state, once, at the version of its last change. A watch sees every key's
latest state, but not necessarily each value a key went through.

--from VERSION starts after VERSION: only changes with a higher version are printed. The
default, 0, starts from the beginning: the first lines then hold every current entry
under PREFIX, then the changes follow. When the cluster no longer remembers the
deletions since VERSION, the watch is reset: pmgcm says so on stderr (with -o json it
also prints {"reset":true,"next":N} on stdout) and the lines that follow are the whole
state under PREFIX: drop any key of your own view that is not among them.

The watch survives a restart of this node's daemon and a change of master: when the
daemon cannot answer, pmgcm says so on stderr ("watch: ...; retrying", at most once a
second), retries with a growing pause (up to 2 seconds), and goes on from where it was,
without gaps. --timeout does not apply: each poll waits up to 25 seconds for a change.
--once polls once (it prints what there is after --from, or waits up to 25 seconds for
the next change) and exits, for scripts.`,
		Example: `  pmgcm config watch mail/
  pmgcm config watch --from 1042 -o json
  pmgcm config watch spam/ --once`,
		Args: posArgs("[PREFIX]"),
		RunE: a.runLongE(func(ctx context.Context, c API, args []string) error {
			if len(args) == 1 {
				opts.prefix = args[0]
			}
			return a.runConfigWatch(ctx, c, opts)
		}),
	}
	f := cmd.Flags()
	f.Var(&opts.from, "from", "print only the changes after `VERSION` (0: every current entry first)")
	f.BoolVar(&opts.once, "once", false, "poll once, print what it brings and exit")
	addOutputFlag(cmd, &opts.output)
	return cmd
}

// runConfigWatch long-polls the changes under opts.prefix and prints them until ctx is
// cancelled (which ends it without error), or after one poll with opts.once. A failed
// poll is retried with backoff from the same version; only errors that a retry cannot
// cure end the watch.
func (a *app) runConfigWatch(ctx context.Context, c API, opts configWatchOptions) error {
	tm := a.watch.withDefaults()
	from := opts.from.v
	backoff := tm.backoffMin
	var lastErrAt time.Time
	for {
		pctx, cancel := context.WithTimeout(ctx, tm.wait+tm.slack)
		r, err := c.ConfigWatch(pctx, opts.prefix, from, tm.wait)
		cancel()
		if ctx.Err() != nil {
			return nil // interrupted: the operator asked to stop
		}
		if err != nil {
			if opts.once || !retryable(err) {
				if errors.Is(err, context.DeadlineExceeded) {
					// %v: this is no timeout of --timeout, which explain would blame.
					return fmt.Errorf("no answer from pmgclusterd at %s within %s: %v",
						a.socket, tm.wait+tm.slack, err)
				}
				return err
			}
			if now := time.Now(); lastErrAt.IsZero() || now.Sub(lastErrAt) >= tm.errorEvery {
				fmt.Fprintf(a.stderr, "watch: %s; retrying\n", oneLine(err.Error()))
				lastErrAt = now
			}
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
			}
			backoff = min(2*backoff, tm.backoffMax)
			continue
		}
		backoff = tm.backoffMin
		if err := a.printWatch(r, opts); err != nil {
			return err
		}
		// An answer without events and without Next (a daemon that lost track) keeps from.
		if r.Next != 0 || r.Reset || len(r.Events) > 0 {
			from = r.Next
		}
		if opts.once {
			return nil
		}
	}
}

// retryable reports whether a failed poll may succeed later: the daemon restarting, no
// master, a timeout. A bad request or a daemon without the watch API fails for good.
func retryable(err error) bool {
	var ae *client.APIError
	if !errors.As(err, &ae) {
		return true
	}
	switch {
	case ae.Code == api.CodeBadRequest, ae.Code == api.CodeIncompatible, ae.Code == api.CodeTooLarge:
		return false
	case ae.Status == http.StatusNotFound, ae.Status == http.StatusMethodNotAllowed:
		return false // no such route: a pmgclusterd from before config watch
	}
	return true
}

// watchReset is the line that announces a reset in JSON mode.
type watchReset struct {
	Reset bool   `json:"reset"`
	Next  uint64 `json:"next"`
}

// printWatch prints one answer: the reset note, then one line per event.
func (a *app) printWatch(r *api.WatchResponse, opts configWatchOptions) error {
	enc := json.NewEncoder(a.stdout)
	enc.SetEscapeHTML(false)
	if r.Reset {
		under := "under " + opts.prefix
		if opts.prefix == "" {
			under = "(all keys)"
		}
		fmt.Fprintf(a.stderr, "watch reset at version %d: the events that follow are the whole state %s\n",
			r.Next, printableKey(under))
		if opts.output == outputJSON {
			if err := enc.Encode(watchReset{Reset: true, Next: r.Next}); err != nil {
				return err
			}
		}
	}
	for _, e := range r.Events {
		var err error
		if opts.output == outputJSON {
			err = enc.Encode(e)
		} else {
			err = writeWatchEvent(a.stdout, e)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// writeWatchEvent prints "VERSION KEY set SIZE bytes" or "VERSION KEY deleted".
func writeWatchEvent(w io.Writer, e api.WatchEvent) error {
	if e.Deleted {
		_, err := fmt.Fprintf(w, "%d %s deleted\n", e.Version, printableKey(e.Key))
		return err
	}
	_, err := fmt.Fprintf(w, "%d %s set %d bytes\n", e.Version, printableKey(e.Key), eventSize(e))
	return err
}

// eventSize is the size in bytes of the value an event carries.
func eventSize(e api.WatchEvent) int {
	if e.Value != nil {
		return len(*e.Value)
	}
	if b, err := base64.StdEncoding.DecodeString(e.ValueBase64); err == nil {
		return len(b)
	}
	return base64.StdEncoding.DecodedLen(len(e.ValueBase64))
}
