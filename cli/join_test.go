package cli

import (
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/api/client"
)

// fakeTerm is a terminal that answers from a script and records the questions.
type fakeTerm struct {
	// answers are given in turn; when they run out the input has ended (io.EOF).
	answers []string
	// asked are the prompts, those of readSecret prefixed with "(no echo) ".
	asked []string
}

func (f *fakeTerm) readLine(_ context.Context, prompt string) (string, error) {
	f.asked = append(f.asked, prompt)
	return f.next()
}

func (f *fakeTerm) readSecret(_ context.Context, prompt string) (string, error) {
	f.asked = append(f.asked, "(no echo) "+prompt)
	return f.next()
}

func (f *fakeTerm) next() (string, error) {
	if len(f.answers) == 0 {
		return "", io.EOF
	}
	a := f.answers[0]
	f.answers = f.answers[1:]
	return a, nil
}

// fast is the timing of join tests: quick polls, and every progress change printed.
var fast = catchUpTiming{pollEvery: time.Millisecond, statusTimeout: time.Second, progressEvery: time.Nanosecond}

// joinStatus is the status of cluster c0ffee seen from the joining node pmg6 (cid 2).
func joinStatus(role, state string, applied uint64) *api.Status {
	return &api.Status{
		Cluster: &api.Cluster{ID: "c0ffee", Epoch: 1, LeaderCID: 1},
		Nodes: []api.Node{
			{CID: 1, Name: "pmg5", IP: "192.168.2.127", Role: api.RoleMaster, State: api.StateActive,
				LastIndex: 100, AppliedIndex: 100},
			{CID: 2, Name: "pmg6", IP: "192.168.2.128", Role: role, State: state,
				LastIndex: applied, AppliedIndex: applied, Local: true},
		},
	}
}

// catchingUp is the status sequence of a join: the node's status from before the join, a
// daemon busy resetting, then the catch-up from S to A.
func catchingUp() []statusAnswer {
	unavailable := client.NewAPIError(503, api.Error{Code: api.CodeUnavailable, Message: "starting"})
	return []statusAnswer{
		{st: &api.Status{Nodes: []api.Node{{Name: "pmg6", IP: "192.168.2.128", Role: api.RoleNone, State: api.StateActive, Local: true}}}},
		{err: unavailable},
		{st: joinStatus(api.RoleNode, api.StateSyncing, 10)},
		{st: joinStatus(api.RoleNode, api.StateSyncing, 10)},
		{st: joinStatus(api.RoleNode, api.StateSyncing, 60)},
		{err: context.DeadlineExceeded},
		{st: joinStatus(api.RoleNode, api.StateActive, 100)},
	}
}

func joinFake() *fakeAPI {
	return &fakeAPI{
		probe: &api.JoinProbe{Address: "192.168.2.127:8006", Fingerprint: "SHA256:AB:CD", ClusterID: "c0ffee",
			Name: "pmg5", CID: 1, ProtocolVersion: 1, StateFormat: 1},
		join:      &api.JoinResponse{ClusterID: "c0ffee", CID: 2, Name: "pmg6", MasterAddress: "192.168.2.127:8006"},
		statusSeq: catchingUp(),
	}
}

// joinCalls are the calls of a whole join that follows catchingUp.
func joinCalls(first ...string) []string {
	return append(first, "join", "status", "status", "status", "status", "status", "status", "status")
}

const joinedOut = "joined cluster c0ffee as cid 2 (master 192.168.2.127:8006); catching up\n"

func TestJoinAllFlags(t *testing.T) {
	f := joinFake()
	r := runEnv(t, context.Background(), env{timing: fast}, f,
		"join", "192.168.2.127:8006", "--fingerprint", "sha256:ab:cd", "--token", "s3cret", "--yes")
	if r.code != ExitOK || r.stderr != "" {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	golden(t, "join_all_flags.golden", r.stdout)
	want := api.JoinRequest{Master: "192.168.2.127:8006", Fingerprint: "sha256:ab:cd", Token: "s3cret"}
	if f.gotJoin != want {
		t.Errorf("join request = %+v, want %+v", f.gotJoin, want)
	}
	if !slices.Equal(f.calls, joinCalls()) {
		t.Errorf("calls = %v", f.calls)
	}
}

func TestJoinProgressOnTerminal(t *testing.T) {
	term := &fakeTerm{}
	r := runEnv(t, context.Background(), env{term: term, stdoutTTY: true, timing: fast}, joinFake(),
		"join", "192.168.2.127", "--fingerprint", "FP", "--token", "T", "--yes")
	if r.code != ExitOK || r.stderr != "" {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	golden(t, "join_terminal.golden", r.stdout)
	if len(term.asked) != 0 {
		t.Errorf("asked %q", term.asked)
	}
}

func TestJoinProgressThrottled(t *testing.T) {
	// Off a terminal with the default pace, the quick changes after the first line are not
	// printed: at most one line a second.
	tm := fast
	tm.progressEvery = time.Hour
	r := runEnv(t, context.Background(), env{timing: tm}, joinFake(),
		"join", "192.168.2.127", "--fingerprint", "FP", "--token", "T", "--yes")
	want := joinedOut + "catching up: applied index 10 of 100\nnode pmg6(2) is a full member: state A\n"
	if r.code != ExitOK || r.stdout != want {
		t.Errorf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
}

func TestJoinFingerprintOnTerminal(t *testing.T) {
	for _, answer := range []string{"y", "yes", " YES "} {
		t.Run(answer, func(t *testing.T) {
			f := joinFake()
			term := &fakeTerm{answers: []string{answer, "y"}}
			r := runEnv(t, context.Background(), env{term: term, timing: fast}, f, "join", "192.168.2.127", "--token", "T")
			if r.code != ExitOK || r.stderr != "" {
				t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
			}
			want := "the master at 192.168.2.127:8006 (cluster c0ffee, node pmg5) presents fingerprint SHA256:AB:CD\n" + joinedOut
			if !strings.HasPrefix(r.stdout, want) || !strings.HasSuffix(r.stdout, "node pmg6(2) is a full member: state A\n") {
				t.Errorf("stdout = %q", r.stdout)
			}
			if !slices.Equal(term.asked, []string{promptTrust, promptWipe}) {
				t.Errorf("asked %q", term.asked)
			}
			if f.gotMaster != "192.168.2.127" || f.gotJoin.Fingerprint != "SHA256:AB:CD" || f.gotJoin.Master != "192.168.2.127" {
				t.Errorf("probe %q, join %+v", f.gotMaster, f.gotJoin)
			}
			if !slices.Equal(f.calls, joinCalls("probe")) {
				t.Errorf("calls = %v", f.calls)
			}
		})
	}

	for _, answers := range [][]string{{"n"}, {""}, {"yess"}, nil} {
		f := joinFake()
		term := &fakeTerm{answers: answers}
		r := runEnv(t, context.Background(), env{term: term}, f, "join", "192.168.2.127", "--token", "T", "--yes")
		if r.code != ExitError || r.stderr != "pmgcm: join cancelled: the master's fingerprint was not confirmed; nothing was changed\n" {
			t.Errorf("%q: exit %d, stderr %q", answers, r.code, r.stderr)
		}
		if !slices.Equal(f.calls, []string{"probe"}) || len(term.asked) != 1 {
			t.Errorf("%q: calls %v, asked %q", answers, f.calls, term.asked)
		}
	}
}

func TestJoinFingerprintOffTerminal(t *testing.T) {
	f := joinFake()
	r := runFake(t, f, "y\n", "join", "192.168.2.127", "--token", "T", "--yes")
	if r.code != ExitError || r.stderr != "pmgcm: "+msgUnconfirmedFP+"\n" {
		t.Errorf("exit %d, stderr %q", r.code, r.stderr)
	}
	if r.stdout != "the master at 192.168.2.127:8006 (cluster c0ffee, node pmg5) presents fingerprint SHA256:AB:CD\n" {
		t.Errorf("stdout = %q", r.stdout)
	}
	if !slices.Equal(f.calls, []string{"probe"}) {
		t.Errorf("calls = %v", f.calls)
	}

	// A master that presents no fingerprint cannot be trusted.
	f = joinFake()
	f.probe.Fingerprint = ""
	r = runEnv(t, context.Background(), env{term: &fakeTerm{answers: []string{"y", "y"}}}, f, "join", "192.168.2.127", "--token", "T")
	if r.code != ExitError || !strings.Contains(r.stderr, "presents no fingerprint") || slices.Contains(f.calls, "join") {
		t.Errorf("no fingerprint: exit %d, stderr %q, calls %v", r.code, r.stderr, f.calls)
	}
}

func TestJoinToken(t *testing.T) {
	envToken := func(k string) string {
		if k == "PMGCM_JOIN_TOKEN" {
			return " from-env\n"
		}
		return ""
	}
	tests := []struct {
		name    string
		args    []string
		getenv  func(string) string
		term    *fakeTerm
		want    string // the token sent; "" when the join is refused
		wantErr string
	}{
		{name: "flag", args: []string{"--token", "from-flag"}, want: "from-flag"},
		{name: "flag beats env", args: []string{"--token", "from-flag"}, getenv: envToken, want: "from-flag"},
		{name: "env", getenv: envToken, want: "from-env"},
		{name: "env beats prompt", getenv: envToken, term: &fakeTerm{answers: []string{"y"}}, want: "from-env"},
		{name: "prompt", term: &fakeTerm{answers: []string{" typed \r", "y"}}, want: "typed"},
		{name: "missing off terminal", wantErr: "pmgcm: " + msgNoToken + "\n"},
		{name: "empty answer", term: &fakeTerm{answers: []string{"", "y"}},
			wantErr: "pmgcm: no join token given (get it with 'pmgcm join-cmd' on a member)\n"},
		{name: "end of input", term: &fakeTerm{},
			wantErr: "pmgcm: no join token given (get it with 'pmgcm join-cmd' on a member)\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := joinFake()
			e := env{getenv: tt.getenv, timing: fast}
			if tt.term != nil {
				e.term = tt.term
			}
			args := append([]string{"join", "192.168.2.127", "--fingerprint", "FP"}, tt.args...)
			if tt.term == nil {
				args = append(args, "--yes")
			}
			r := runEnv(t, context.Background(), e, f, args...)
			if tt.wantErr != "" {
				if r.code != ExitError || r.stderr != tt.wantErr || len(f.calls) != 0 {
					t.Errorf("exit %d, stderr %q, calls %v", r.code, r.stderr, f.calls)
				}
				return
			}
			if r.code != ExitOK || f.gotJoin.Token != tt.want {
				t.Errorf("exit %d, stderr %q, token %q, want %q", r.code, r.stderr, f.gotJoin.Token, tt.want)
			}
			if tt.name == "prompt" && (len(tt.term.asked) == 0 || tt.term.asked[0] != "(no echo) "+promptToken) {
				t.Errorf("asked %q", tt.term.asked)
			}
		})
	}
}

func TestJoinConfirm(t *testing.T) {
	for _, answers := range [][]string{{"n"}, {"no"}, {""}, nil} {
		f := joinFake()
		term := &fakeTerm{answers: answers}
		r := runEnv(t, context.Background(), env{term: term}, f, "join", "192.168.2.127", "--fingerprint", "FP", "--token", "T")
		if r.code != ExitError || r.stderr != "pmgcm: join cancelled: nothing was changed\n" || r.stdout != "" {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", answers, r.code, r.stdout, r.stderr)
		}
		if len(f.calls) != 0 || !slices.Equal(term.asked, []string{promptWipe}) {
			t.Errorf("%q: calls %v, asked %q", answers, f.calls, term.asked)
		}
	}

	f := joinFake()
	r := runFake(t, f, "y\n", "join", "192.168.2.127", "--fingerprint", "FP", "--token", "T")
	if r.code != ExitError || r.stderr != "pmgcm: "+msgNoYes+"\n" || len(f.calls) != 0 {
		t.Errorf("off terminal: exit %d, stderr %q, calls %v", r.code, r.stderr, f.calls)
	}

	// -y is --yes.
	f = joinFake()
	r = runEnv(t, context.Background(), env{timing: fast}, f, "join", "192.168.2.127", "--fingerprint", "FP", "--token", "T", "-y")
	if r.code != ExitOK {
		t.Errorf("-y: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestJoinBadArguments(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"pmg5"},
		{"pmg5:8006"},
		{"192.168.2"},
		{"192.168.2.127:"},
		{"192.168.2.127:0"},
		{"192.168.2.127:65536"},
		{"192.168.2.127:http"},
		{"192.168.2.127:8006:1"},
		{"[fd00::1]"},
		{"fd00::1:8006:"},
		{"http://192.168.2.127"},
		{""},
		{"192.168.2.127", "192.168.2.128"},
		{"192.168.2.127", "--fingerprint", ""},
		{"192.168.2.127", "--token", " "},
		{"192.168.2.127", "--wait", "-1s"},
		{"192.168.2.127", "--wait", "soon"},
	} {
		f := joinFake()
		r := runEnv(t, context.Background(), env{term: &fakeTerm{answers: []string{"y", "y", "y"}}}, f, append([]string{"join"}, args...)...)
		if r.code != ExitUsage || !strings.HasPrefix(r.stderr, "pmgcm: ") || !strings.Contains(r.stderr, "Usage:") || r.stdout != "" {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", args, r.code, r.stdout, r.stderr)
		}
		if len(f.calls) != 0 {
			t.Errorf("%q: reached the daemon: %v", args, f.calls)
		}
	}
	r := runFake(t, joinFake(), "", "join", "pmg5")
	if !strings.HasPrefix(r.stderr, `pmgcm: bad master address "pmg5": want an IP address, optionally with :PORT`) {
		t.Errorf("stderr = %q", r.stderr)
	}
}

func TestCheckMasterAddress(t *testing.T) {
	for _, s := range []string{"192.168.2.127", "192.168.2.127:8006", "127.0.0.2:1", "fd00::1", "[fd00::1]:8006", "::1"} {
		if err := checkMasterAddress(s); err != nil {
			t.Errorf("%q: %v", s, err)
		}
	}
}

func TestJoinDaemonErrors(t *testing.T) {
	tests := []struct {
		code, msg, hint string
		wantHint        string
	}{
		{api.CodeBadToken, "the master refused the join token", "", joinHints[api.CodeBadToken]},
		{api.CodeBadToken, "the master refused the join token", "ask your admin", "ask your admin"},
		{api.CodeFingerprint, "the master at 192.168.2.127:8006 presents fingerprint SHA256:EE, not SHA256:AB:CD", "", joinHints[api.CodeFingerprint]},
		{api.CodeClusterExists, "this node is already in cluster beef", "", joinHints[api.CodeClusterExists]},
		{api.CodeUnreachable, "cannot reach 192.168.2.127:8006: connection refused", "", joinHints[api.CodeUnreachable]},
		{api.CodeInternal, "disk full", "", ""},
	}
	for _, tt := range tests {
		want := "pmgcm: " + tt.msg + "\n"
		if tt.wantHint != "" {
			want += tt.wantHint + "\n"
		}
		apiErr := client.NewAPIError(400, api.Error{Code: tt.code, Message: tt.msg, Hint: tt.hint})

		f := joinFake()
		f.errs = map[string]error{"join": apiErr}
		r := runFake(t, f, "", "join", "192.168.2.127", "--fingerprint", "FP", "--token", "T", "--yes")
		if r.code != ExitError || r.stderr != want || r.stdout != "" {
			t.Errorf("join %s: exit %d, stdout %q, stderr %q, want %q", tt.code, r.code, r.stdout, r.stderr, want)
		}
		if !slices.Equal(f.calls, []string{"join"}) {
			t.Errorf("join %s: calls %v", tt.code, f.calls)
		}

		// The same errors from the probe, before anything is asked.
		f = joinFake()
		f.errs = map[string]error{"probe": apiErr}
		term := &fakeTerm{answers: []string{"y", "y"}}
		r = runEnv(t, context.Background(), env{term: term}, f, "join", "192.168.2.127", "--token", "T")
		if r.code != ExitError || r.stderr != want || len(term.asked) != 0 || !slices.Equal(f.calls, []string{"probe"}) {
			t.Errorf("probe %s: exit %d, stderr %q, asked %q, calls %v", tt.code, r.code, r.stderr, term.asked, f.calls)
		}
	}

	// The local daemon down is the client's error, worded by the client.
	f := joinFake()
	f.errs = map[string]error{"join": client.ErrUnreachable}
	r := runFake(t, f, "", "join", "192.168.2.127", "--fingerprint", "FP", "--token", "T", "--yes")
	if r.code != ExitError || r.stderr != "pmgcm: cannot reach pmgclusterd\n" {
		t.Errorf("unreachable daemon: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestJoinWaitExpiry(t *testing.T) {
	f := joinFake()
	f.statusSeq = []statusAnswer{{st: joinStatus(api.RoleNode, api.StateSyncing, 10)}}
	start := time.Now()
	r := runEnv(t, context.Background(), env{timing: fast}, f,
		"join", "192.168.2.127", "--fingerprint", "FP", "--token", "T", "--yes", "--wait", "50ms")
	stuck := "pmgcm: node pmg6(2) was admitted (cid 2) but is not a full member after 50ms: state S\n" +
		"it reaches pmg5(1) 192.168.2.127\n" +
		"it has not caught up yet: see pmgcm status (it goes on catching up by itself), or undo the join with 'pmgcm delete 2' on the master (192.168.2.127:8006)\n"
	if r.code != ExitError || r.stderr != stuck {
		t.Errorf("exit %d, stderr %q", r.code, r.stderr)
	}
	if r.stdout != joinedOut+"catching up: applied index 10 of 100\n" {
		t.Errorf("stdout = %q", r.stdout)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v", d)
	}

	// When the status keeps failing, the last error is told; on a terminal the progress line
	// is ended first.
	f = joinFake()
	unavailable := client.NewAPIError(503, api.Error{Code: api.CodeUnavailable, Message: "installing snapshot", Hint: "wait"})
	f.statusSeq = []statusAnswer{{st: joinStatus(api.RoleNode, api.StateSyncing, 10)}, {err: unavailable}}
	r = runEnv(t, context.Background(), env{term: &fakeTerm{}, stdoutTTY: true, timing: fast}, f,
		"join", "192.168.2.127", "--fingerprint", "FP", "--token", "T", "--yes", "--wait", "50ms")
	if r.code != ExitError || r.stderr != stuck+"last status error: installing snapshot wait\n" {
		t.Errorf("failing status: exit %d, stderr %q", r.code, r.stderr)
	}
	if r.stdout != joinedOut+"\rcatching up: applied index 10 of 100\n" {
		t.Errorf("failing status: stdout %q", r.stdout)
	}
}

// cancellingAPI cancels the run's context at its third status call.
type cancellingAPI struct {
	*fakeAPI
	cancel context.CancelFunc
	n      int
}

func (c *cancellingAPI) Status(ctx context.Context) (*api.Status, error) {
	if c.n++; c.n == 3 {
		c.cancel()
	}
	return c.fakeAPI.Status(ctx)
}

func TestJoinInterrupted(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := joinFake()
	f.statusSeq = []statusAnswer{{st: joinStatus(api.RoleNode, api.StateSyncing, 10)}}
	r := runEnv(t, ctx, env{timing: fast}, &cancellingAPI{fakeAPI: f, cancel: cancel}, "join", "192.168.2.127", "--fingerprint", "FP", "--token", "T", "--yes")
	want := "pmgcm: interrupted: stopped following the catch-up; the node goes on joining in the background: see pmgcm status: context canceled\n"
	if r.code != ExitError || r.stderr != want {
		t.Errorf("exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestJoinNoWait(t *testing.T) {
	f := joinFake()
	r := runFake(t, f, "", "join", "192.168.2.127", "--fingerprint", "FP", "--token", "T", "--yes", "--wait", "0")
	if r.code != ExitOK || r.stdout != joinedOut || !slices.Equal(f.calls, []string{"join"}) {
		t.Errorf("exit %d, stdout %q, stderr %q, calls %v", r.code, r.stdout, r.stderr, f.calls)
	}
}

// TestJoinTimeoutPerCall checks that --timeout bounds each call, not the whole join: the
// catch-up here outlasts --timeout.
func TestJoinTimeoutPerCall(t *testing.T) {
	f := joinFake()
	tm := fast
	tm.pollEvery = 20 * time.Millisecond
	r := runEnv(t, context.Background(), env{timing: tm}, f,
		"join", "192.168.2.127", "--fingerprint", "FP", "--token", "T", "--yes", "--timeout", "30ms")
	if r.code != ExitOK {
		t.Errorf("exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestJoinHelp(t *testing.T) {
	r := runFake(t, &fakeAPI{}, "", "join", "--help")
	if r.code != ExitOK || r.stderr != "" {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	golden(t, "join_help.golden", r.stdout)
	if !strings.Contains(r.stdout, "all data on that node is") {
		t.Error("help does not say that joining destroys the node's data")
	}
}

func TestJoinCmd(t *testing.T) {
	jc := &api.JoinCmd{Master: "192.168.2.127", Fingerprint: "SHA256:AB:CD", Token: "tok",
		Command: "pmgcm join 192.168.2.127 --fingerprint SHA256:AB:CD --token tok"}
	// The line is always the environment form, whatever Command the daemon sent (the
	// first release sends the --token form).
	line := "PMGCM_JOIN_TOKEN=tok pmgcm join 192.168.2.127 --fingerprint SHA256:AB:CD\n"

	f := &fakeAPI{joinCmd: jc}
	r := runFake(t, f, "", "join-cmd")
	if r.code != ExitOK || r.stdout != line || r.stderr != "" || f.gotRotate {
		t.Errorf("text: exit %d, stdout %q, stderr %q, rotate %v", r.code, r.stdout, r.stderr, f.gotRotate)
	}

	r = runFake(t, &fakeAPI{joinCmd: jc}, "", "join-cmd", "-o", "json")
	want := `{
  "master": "192.168.2.127",
  "fingerprint": "SHA256:AB:CD",
  "token": "tok",
  "command": "pmgcm join 192.168.2.127 --fingerprint SHA256:AB:CD --token tok"
}
`
	if r.code != ExitOK || r.stdout != want {
		t.Errorf("json: exit %d, stdout %q", r.code, r.stdout)
	}

	f = &fakeAPI{joinCmd: jc}
	r = runFake(t, f, "", "join-cmd", "--rotate")
	if r.code != ExitOK || r.stdout != line || r.stderr != "join token rotated; the old token no longer works\n" || !f.gotRotate {
		t.Errorf("rotate: exit %d, stdout %q, stderr %q, rotate %v", r.code, r.stdout, r.stderr, f.gotRotate)
	}

	exp := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	jcTTL := *jc
	jcTTL.Expires = &exp
	f = &fakeAPI{joinCmd: &jcTTL}
	r = runFake(t, f, "", "join-cmd", "--ttl", "90m")
	if r.code != ExitOK || r.stdout != line || f.gotTTL != 90*time.Minute ||
		r.stderr != "join token rotated; the old token no longer works\nthe join token expires at 2026-12-01T10:00:00Z\n" {
		t.Errorf("ttl: exit %d, stdout %q, stderr %q, ttl %v", r.code, r.stdout, r.stderr, f.gotTTL)
	}
	if r := runFake(t, &fakeAPI{joinCmd: jc}, "", "join-cmd", "--ttl", "-1h"); r.code != ExitUsage {
		t.Errorf("negative ttl: exit %d, stderr %q", r.code, r.stderr)
	}

	noCluster := client.NewAPIError(409, api.Error{Code: api.CodeNoCluster, Message: "no cluster defined", Hint: "create one with pmgcm create"})
	r = runFake(t, &fakeAPI{err: noCluster}, "", "join-cmd", "--rotate")
	if r.code != ExitError || r.stdout != "" || r.stderr != "pmgcm: no cluster defined\ncreate one with pmgcm create\n" {
		t.Errorf("error: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}

	for _, args := range [][]string{{"join-cmd", "x"}, {"join-cmd", "-o", "yaml"}} {
		f := &fakeAPI{joinCmd: jc}
		if r := runFake(t, f, "", args...); r.code != ExitUsage || len(f.calls) != 0 {
			t.Errorf("%q: exit %d, calls %v", args, r.code, f.calls)
		}
	}
}

func TestDelete(t *testing.T) {
	f := &fakeAPI{del: &api.DeleteResponse{CID: 3, Name: "pmg7", IP: "192.168.2.129", TokenRotated: true}}
	r := runFake(t, f, "", "delete", "3")
	if r.code != ExitOK || r.stdout != "deleted cid 3 (pmg7, 192.168.2.129)\njoin token rotated: the deleted node knew it; print the new one with pmgcm join-cmd\n" || r.stderr != "" || f.gotCID != 3 {
		t.Errorf("exit %d, stdout %q, stderr %q, cid %d", r.code, r.stdout, r.stderr, f.gotCID)
	}
	// A daemon that did not rotate the token (or of the first release): say what to do.
	r = runFake(t, &fakeAPI{del: &api.DeleteResponse{CID: 3, Name: "pmg7", IP: "192.168.2.129"}}, "", "delete", "3")
	if r.code != ExitOK || r.stdout != "deleted cid 3 (pmg7, 192.168.2.129)\nwarning: the join token was not rotated and the deleted node knows it: run pmgcm join-cmd --rotate\n" {
		t.Errorf("not rotated: exit %d, stdout %q", r.code, r.stdout)
	}

	r = runFake(t, &fakeAPI{del: f.del}, "", "delete", "3", "-o", "json")
	if r.code != ExitOK || r.stdout != "{\n  \"cid\": 3,\n  \"name\": \"pmg7\",\n  \"ip\": \"192.168.2.129\",\n  \"token_rotated\": true\n}\n" {
		t.Errorf("json: exit %d, stdout %q", r.code, r.stdout)
	}

	notFound := client.NewAPIError(404, api.Error{Code: api.CodeNotFound, Message: "no node with cid 9"})
	f = &fakeAPI{err: notFound}
	r = runFake(t, f, "", "delete", "9")
	if r.code != ExitError || r.stdout != "" || r.stderr != "pmgcm: no node with cid 9\nlist the nodes and their CIDs with pmgcm status\n" || f.gotCID != 9 {
		t.Errorf("not found: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}

	for _, args := range [][]string{{}, {"0"}, {"-1"}, {"+1"}, {"1.5"}, {"abc"}, {""}, {"18446744073709551616"}, {"1", "2"}} {
		f := &fakeAPI{}
		r := runFake(t, f, "", append([]string{"delete"}, args...)...)
		if r.code != ExitUsage || !strings.HasPrefix(r.stderr, "pmgcm: ") || len(f.calls) != 0 {
			t.Errorf("%q: exit %d, stderr %q, calls %v", args, r.code, r.stderr, f.calls)
		}
	}
}

func TestWithHint(t *testing.T) {
	hints := map[string]string{api.CodeNotFound: "look"}
	plain := errors.New("x")
	if withHint(plain, hints) != plain {
		t.Error("plain error changed")
	}
	orig := client.NewAPIError(404, api.Error{Code: api.CodeNotFound, Message: "gone"})
	got := withHint(orig, hints)
	if got.Error() != "gone\nlook" || orig.Hint != "" {
		t.Errorf("got %q, original hint %q", got, orig.Hint)
	}
	var ae *client.APIError
	if !errors.As(got, &ae) || ae.Code != api.CodeNotFound || ae.Status != 404 {
		t.Errorf("hinted error lost its code: %#v", got)
	}
}
