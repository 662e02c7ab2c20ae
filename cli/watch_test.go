package cli

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/api/client"
)

// fastWatch is the timing of watch tests: short backoff, every retry line printed.
var fastWatch = watchTiming{backoffMin: time.Millisecond, backoffMax: 4 * time.Millisecond, errorEvery: time.Nanosecond}

func strp(s string) *string { return &s }

// watchEvents are a set with a text value, a set with a binary value and a deletion.
var watchEvents = &api.WatchResponse{Next: 6, Events: []api.WatchEvent{
	{Key: "mail/relay", Version: 3, Value: strp("smtp.example.com")},
	{Key: "mail/cert.pem", Version: 4, ValueBase64: "AP/+CmGADQ=="},
	{Key: "mail/old", Version: 5, Deleted: true},
}}

const watchEventsText = "3 mail/relay set 16 bytes\n4 mail/cert.pem set 7 bytes\n5 mail/old deleted\n"

const watchEventsJSON = `{"key":"mail/relay","version":3,"value":"smtp.example.com"}
{"key":"mail/cert.pem","version":4,"value_base64":"AP/+CmGADQ=="}
{"key":"mail/old","version":5,"deleted":true}
`

// froms lists the from of each watch call.
func froms(f *fakeAPI) []uint64 {
	var out []uint64
	for _, c := range f.gotWatch {
		out = append(out, c.from)
	}
	return out
}

// cancelAtWatch makes f cancel the run's ctx at its n-th watch call; that call then waits
// for the ctx like a long poll and ends with it.
func cancelAtWatch(f *fakeAPI, n int) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	f.onCall = func(call string) {
		if call == "watch" {
			if calls++; calls == n {
				cancel()
			}
		}
	}
	return ctx
}

func TestConfigWatchOnceText(t *testing.T) {
	f := &fakeAPI{watchSeq: []watchAnswer{{r: watchEvents}}}
	// --timeout does not bound a poll: it waits longer than the daemon's 25s.
	r := runFake(t, f, "", "--timeout", "1s", "config", "watch", "mail/", "--once")
	if r.code != ExitOK || r.stdout != watchEventsText || r.stderr != "" {
		t.Fatalf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if len(f.gotWatch) != 1 {
		t.Fatalf("calls %v", f.calls)
	}
	c := f.gotWatch[0]
	if c.prefix != "mail/" || c.from != 0 || c.wait != 25*time.Second || !c.hasDeadline ||
		c.timeout <= 30*time.Second || c.timeout > 35*time.Second {
		t.Errorf("watch call = %+v", c)
	}
}

func TestConfigWatchOnceJSON(t *testing.T) {
	f := &fakeAPI{watchSeq: []watchAnswer{{r: watchEvents}}}
	r := runFake(t, f, "", "config", "watch", "--from", "2", "--once", "-o", "json")
	if r.code != ExitOK || r.stdout != watchEventsJSON || r.stderr != "" {
		t.Errorf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if c := f.gotWatch[0]; c.prefix != "" || c.from != 2 {
		t.Errorf("watch call = %+v", c)
	}

	// Keys that would break a line are quoted in text; JSON escapes them anyway.
	odd := &api.WatchResponse{Next: 8, Events: []api.WatchEvent{{Key: "a\nb", Version: 7, Value: strp("")}}}
	r = runFake(t, &fakeAPI{watchSeq: []watchAnswer{{r: odd}}}, "", "config", "watch", "--once")
	if r.code != ExitOK || r.stdout != "7 \"a\\nb\" set 0 bytes\n" {
		t.Errorf("odd key: exit %d, stdout %q", r.code, r.stdout)
	}
}

func TestConfigWatchFollows(t *testing.T) {
	more := &api.WatchResponse{Next: 9, Events: []api.WatchEvent{{Key: "mail/relay", Version: 9, Value: strp("x")}}}
	f := &fakeAPI{watchSeq: []watchAnswer{
		{r: watchEvents},
		{r: &api.WatchResponse{Events: []api.WatchEvent{}, Next: 6}}, // the wait ran out
		{r: more},
	}}
	ctx := cancelAtWatch(f, 4)
	r := runEnv(t, ctx, env{watch: fastWatch}, f, "config", "watch", "mail/")
	if r.code != ExitOK || r.stdout != watchEventsText+"9 mail/relay set 1 bytes\n" || r.stderr != "" {
		t.Errorf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if got := froms(f); !slices.Equal(got, []uint64{0, 6, 6, 9}) {
		t.Errorf("froms = %v", got)
	}
	for _, c := range f.gotWatch {
		if c.prefix != "mail/" {
			t.Errorf("prefix = %q", c.prefix)
		}
	}
}

func TestConfigWatchReset(t *testing.T) {
	reset := &api.WatchResponse{Reset: true, Next: 12, Events: []api.WatchEvent{
		{Key: "mail/relay", Version: 11, Value: strp("new")},
	}}
	f := &fakeAPI{watchSeq: []watchAnswer{{r: reset}}}
	ctx := cancelAtWatch(f, 2)
	r := runEnv(t, ctx, env{watch: fastWatch}, f, "config", "watch", "mail/", "--from", "3")
	if r.code != ExitOK || r.stdout != "11 mail/relay set 3 bytes\n" ||
		r.stderr != "watch reset at version 12: the events that follow are the whole state under mail/\n" {
		t.Errorf("text: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if got := froms(f); !slices.Equal(got, []uint64{3, 12}) {
		t.Errorf("froms = %v", got)
	}

	f = &fakeAPI{watchSeq: []watchAnswer{{r: reset}}}
	r = runFake(t, f, "", "config", "watch", "--from", "3", "--once", "-o", "json")
	want := `{"reset":true,"next":12}` + "\n" + `{"key":"mail/relay","version":11,"value":"new"}` + "\n"
	if r.code != ExitOK || r.stdout != want ||
		r.stderr != "watch reset at version 12: the events that follow are the whole state (all keys)\n" {
		t.Errorf("json: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}

	// A reset to an empty state: every key of the watcher's view is gone.
	f = &fakeAPI{watchSeq: []watchAnswer{{r: &api.WatchResponse{Reset: true, Next: 30}}}}
	r = runFake(t, f, "", "config", "watch", "mail/", "--from", "3", "--once", "-o", "json")
	if r.code != ExitOK || r.stdout != `{"reset":true,"next":30}`+"\n" {
		t.Errorf("empty reset: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
}

// errUnreachableTest is what a Client returns while the daemon restarts.
var errUnreachableTest = fmt.Errorf("%w at /run/pmgcm/pmgcm.sock: connection refused; is the daemon running?", client.ErrUnreachable)

var noMaster = client.NewAPIError(503, api.Error{Code: api.CodeNoQuorum,
	Message: "no master", Hint: "see pmgcm status"})

func TestConfigWatchRetries(t *testing.T) {
	after := &api.WatchResponse{Next: 8, Events: []api.WatchEvent{{Key: "mail/relay", Version: 7, Deleted: true}}}
	f := &fakeAPI{watchSeq: []watchAnswer{{err: errUnreachableTest}, {err: noMaster}, {r: after}}}
	ctx := cancelAtWatch(f, 4)
	start := time.Now()
	r := runEnv(t, ctx, env{watch: fastWatch}, f, "config", "watch", "mail/", "--from", "5")
	wantErr := "watch: " + errUnreachableTest.Error() + "; retrying\nwatch: no master see pmgcm status; retrying\n"
	if r.code != ExitOK || r.stdout != "7 mail/relay deleted\n" || r.stderr != wantErr {
		t.Errorf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	// The failed polls are retried from the same version: no change is lost.
	if got := froms(f); !slices.Equal(got, []uint64{5, 5, 5, 8}) {
		t.Errorf("froms = %v", got)
	}
	// Backoff: 1ms, then 2ms.
	if d := time.Since(start); d < 3*time.Millisecond {
		t.Errorf("retried after %s, want a backoff", d)
	}

	// At most one retry line a second.
	f = &fakeAPI{watchSeq: []watchAnswer{{err: errUnreachableTest}, {err: noMaster}, {err: noMaster}, {r: after}}}
	ctx = cancelAtWatch(f, 5)
	tm := fastWatch
	tm.errorEvery = 0 // the default: a second
	r = runEnv(t, ctx, env{watch: tm}, f, "config", "watch", "mail/", "--from", "5")
	if r.code != ExitOK || r.stdout != "7 mail/relay deleted\n" || r.stderr != "watch: "+errUnreachableTest.Error()+"; retrying\n" {
		t.Errorf("rate limit: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if got := froms(f); !slices.Equal(got, []uint64{5, 5, 5, 5, 8}) {
		t.Errorf("rate limit: froms = %v", got)
	}
}

func TestConfigWatchBackoff(t *testing.T) {
	tm := watchTiming{backoffMin: 100 * time.Millisecond, backoffMax: 2 * time.Second}.withDefaults()
	var got []time.Duration
	for b := tm.backoffMin; len(got) < 7; b = min(2*b, tm.backoffMax) {
		got = append(got, b)
	}
	want := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond,
		800 * time.Millisecond, 1600 * time.Millisecond, 2 * time.Second, 2 * time.Second}
	if !slices.Equal(got, want) {
		t.Errorf("backoff = %v", got)
	}
	if d := (watchTiming{}).withDefaults(); d.wait != 25*time.Second || d.wait+d.slack != 35*time.Second ||
		d.backoffMin != 100*time.Millisecond || d.backoffMax != 2*time.Second || d.errorEvery != time.Second {
		t.Errorf("defaults = %+v", d)
	}
}

func TestConfigWatchFatalErrors(t *testing.T) {
	bad := client.NewAPIError(400, api.Error{Code: api.CodeBadRequest, Message: "bad prefix"})
	old := client.NewAPIError(404, api.Error{Message: "daemon answered 404 Not Found: 404 page not found"})
	for _, tt := range []struct {
		args []string
		err  error
		want string
	}{
		// --once does not retry.
		{[]string{"--once"}, errUnreachableTest, "pmgcm: " + errUnreachableTest.Error() + "\n"},
		{[]string{"--once"}, noMaster, "pmgcm: no master\nsee pmgcm status\n"},
		{[]string{"--once"}, fmt.Errorf("GET /v1/config/watch: %w", context.DeadlineExceeded),
			"pmgcm: no answer from pmgclusterd at /run/pmgcm/pmgcm.sock within 35s: GET /v1/config/watch: context deadline exceeded\n"},
		// A retry cannot cure these.
		{nil, bad, "pmgcm: bad prefix\n"},
		{nil, old, "pmgcm: daemon answered 404 Not Found: 404 page not found\n"},
	} {
		f := &fakeAPI{watchSeq: []watchAnswer{{err: tt.err}}}
		r := runEnv(t, context.Background(), env{watch: fastWatch}, f, append([]string{"config", "watch"}, tt.args...)...)
		if r.code != ExitError || r.stdout != "" || r.stderr != tt.want || len(f.gotWatch) != 1 {
			t.Errorf("%v: exit %d, stdout %q, stderr %q, calls %v", tt.err, r.code, r.stdout, r.stderr, f.calls)
		}
	}
}

// cancelOnWrite cancels when something is written to it.
type cancelOnWrite struct {
	want   string
	cancel context.CancelFunc
}

func (w cancelOnWrite) Write(p []byte) (int, error) {
	if strings.Contains(string(p), w.want) {
		w.cancel()
	}
	return len(p), nil
}

func TestConfigWatchInterrupted(t *testing.T) {
	// Ctrl-C during a long poll: exit 0, nothing printed.
	f := &fakeAPI{}
	ctx := cancelAtWatch(f, 1)
	r := runEnv(t, ctx, env{watch: fastWatch}, f, "config", "watch")
	if r.code != ExitOK || r.stdout != "" || r.stderr != "" || len(f.gotWatch) != 1 {
		t.Errorf("in a poll: exit %d, stdout %q, stderr %q, calls %v", r.code, r.stdout, r.stderr, f.calls)
	}

	// Ctrl-C during the pause after a failed poll (an hour here).
	f = &fakeAPI{watchSeq: []watchAnswer{{err: errUnreachableTest}}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tm := fastWatch
	tm.backoffMin, tm.backoffMax = time.Hour, time.Hour
	done := make(chan result, 1)
	go func() {
		done <- runEnv(t, ctx, env{watch: tm, stderr: cancelOnWrite{"retrying", cancel}}, f, "config", "watch")
	}()
	select {
	case r = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("watch did not stop when its ctx was cancelled during the backoff")
	}
	if r.code != ExitOK || r.stdout != "" || r.stderr != "watch: "+errUnreachableTest.Error()+"; retrying\n" || len(f.gotWatch) != 1 {
		t.Errorf("in the backoff: exit %d, stdout %q, stderr %q, calls %v", r.code, r.stdout, r.stderr, f.calls)
	}

	// With --once too.
	f = &fakeAPI{}
	ctx = cancelAtWatch(f, 1)
	r = runEnv(t, ctx, env{}, f, "config", "watch", "--once", "-o", "json")
	if r.code != ExitOK || r.stdout != "" || r.stderr != "" {
		t.Errorf("--once: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
}

func TestConfigWatchUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"config", "watch", "a", "b"},
		{"config", "watch", "--from", "-1"},
		{"config", "watch", "--from", "x"},
		{"config", "watch", "--from"},
		{"config", "watch", "-o", "xml"},
		{"config", "watch", "--once=sometimes"},
	} {
		f := &fakeAPI{}
		r := runFake(t, f, "", args...)
		if r.code != ExitUsage || !strings.HasPrefix(r.stderr, "pmgcm: ") || !strings.Contains(r.stderr, "Usage:") || r.stdout != "" {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", args, r.code, r.stdout, r.stderr)
		}
		if len(f.calls) != 0 {
			t.Errorf("%q: reached the daemon: %v", args, f.calls)
		}
	}
}

func TestConfigWatchHelp(t *testing.T) {
	r := runFake(t, &fakeAPI{}, "", "config", "watch", "--help")
	if r.code != ExitOK || r.stderr != "" {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	golden(t, "config_watch_help.golden", r.stdout)
	for _, s := range []string{"--from VERSION", "--once", "coalesces", "reset", "retrying"} {
		if !strings.Contains(r.stdout, s) {
			t.Errorf("help does not say %q", s)
		}
	}
	for _, cmd := range []string{"get", "list"} {
		r := runFake(t, &fakeAPI{}, "", "config", cmd, "--help")
		if !strings.Contains(r.stdout, "--stale") || !strings.Contains(r.stdout, "linearizable") || !strings.Contains(r.stdout, "without quorum") {
			t.Errorf("config %s --help does not explain --stale:\n%s", cmd, r.stdout)
		}
	}
	for _, cmd := range []string{"set", "delete"} {
		r := runFake(t, &fakeAPI{}, "", "config", cmd, "--help")
		if !strings.Contains(r.stdout, "--if-version N") || !strings.Contains(r.stdout, "compare-and-set") {
			t.Errorf("config %s --help does not explain --if-version:\n%s", cmd, r.stdout)
		}
	}
}
