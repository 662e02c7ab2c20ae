package cli

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/api/client"
)

// forcedStatus is the status on pmg5 (cid 1, 192.168.2.127) after a forced recovery that
// left cid 2 and cid 3 fenced.
func forcedStatus() *api.Status {
	return &api.Status{
		Cluster: &api.Cluster{ID: "c0ffee", Epoch: 3, LeaderCID: 1},
		Nodes: []api.Node{
			{CID: 3, Name: "pmg7", IP: "192.168.2.129", Role: api.RoleNode, State: api.StateDown},
			{CID: 1, Name: "pmg5", IP: "192.168.2.127", Role: api.RoleMaster, State: api.StateActive, Local: true},
			{CID: 2, Name: "pmg6", IP: "192.168.2.128", Role: api.RoleNode, State: api.StateDown},
		},
	}
}

func forcedFake() *fakeAPI {
	return &fakeAPI{
		promote: &api.PromoteResponse{CID: 1, Name: "pmg5", Forced: true, Epoch: 3, Fenced: []uint64{2, 3}},
		status:  forcedStatus(),
	}
}

const forcedOut = "node pmg5(1) is now the master of epoch 3\n" +
	"fenced: cid 2, cid 3: run 'pmgcm sync --master_ip 192.168.2.127' on each to bring it back\n"

// stderrAtFirstCall makes f note what stderr holds when the daemon is first called, and
// returns a function that reports it (false when the daemon was not called).
func stderrAtFirstCall(f *fakeAPI, stderr *bytes.Buffer) func() (string, bool) {
	var seen string
	var called bool
	f.onCall = func(string) {
		if !called {
			seen, called = stderr.String(), true
		}
	}
	return func() (string, bool) { return seen, called }
}

func TestPromote(t *testing.T) {
	f := &fakeAPI{promote: &api.PromoteResponse{CID: 1, Name: "pmg5", AlreadyMaster: true, Epoch: 2}}
	r := runFake(t, f, "", "promote")
	if r.code != ExitOK || r.stdout != "this node is already the master (cid 1); nothing changed\n" || r.stderr != "" {
		t.Errorf("already master: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if !slices.Equal(f.calls, []string{"promote"}) || f.gotForce {
		t.Errorf("already master: calls %v, force %v", f.calls, f.gotForce)
	}

	// On a terminal, a promotion without --force asks nothing.
	term := &fakeTerm{}
	f = &fakeAPI{promote: &api.PromoteResponse{CID: 2, Name: "pmg6", Epoch: 2}}
	r = runEnv(t, context.Background(), env{term: term}, f, "promote")
	if r.code != ExitOK || r.stdout != "node pmg6(2) is now the master\n" || r.stderr != "" {
		t.Errorf("promoted: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if !slices.Equal(f.calls, []string{"promote"}) || f.gotForce || len(term.asked) != 0 {
		t.Errorf("promoted: calls %v, force %v, asked %q", f.calls, f.gotForce, term.asked)
	}

	r = runFake(t, &fakeAPI{promote: f.promote}, "", "promote", "-o", "json")
	if r.code != ExitOK || r.stdout != "{\n  \"cid\": 2,\n  \"name\": \"pmg6\",\n  \"epoch\": 2\n}\n" {
		t.Errorf("json: exit %d, stdout %q", r.code, r.stdout)
	}
}

func TestPromoteDaemonErrors(t *testing.T) {
	tests := []struct {
		code, msg, hint string
		wantHint        string
	}{
		{api.CodeNoQuorum, "no quorum: 1 of 2 voters reachable; the master pmg5(1) is down", "",
			promoteHints[api.CodeNoQuorum]},
		{api.CodeNoQuorum, "no quorum", "promote --force, if pmg5 is gone for good", "promote --force, if pmg5 is gone for good"},
		{api.CodeBehind, "pmg7(3) has a longer committed log (index 120 > 100)", "", promoteHints[api.CodeBehind]},
		{api.CodeFenced, "this node was superseded at epoch 3 by pmg6(2)", "", promoteHints[api.CodeFenced]},
		{api.CodeNoCluster, "no cluster defined", "create one with pmgcm create", "create one with pmgcm create"},
		{api.CodeInternal, "disk full", "", ""},
	}
	for _, tt := range tests {
		want := "pmgcm: " + tt.msg + "\n"
		if tt.wantHint != "" {
			want += tt.wantHint + "\n"
		}
		f := &fakeAPI{errs: map[string]error{"promote": client.NewAPIError(409, api.Error{Code: tt.code, Message: tt.msg, Hint: tt.hint})}}
		r := runFake(t, f, "", "promote")
		if r.code != ExitError || r.stderr != want || r.stdout != "" {
			t.Errorf("%s: exit %d, stdout %q, stderr %q, want %q", tt.code, r.code, r.stdout, r.stderr, want)
		}
		if !slices.Equal(f.calls, []string{"promote"}) {
			t.Errorf("%s: calls %v", tt.code, f.calls)
		}
	}

	// A refused forced promotion: the warning, then the error; no status call.
	f := forcedFake()
	f.errs = map[string]error{"promote": client.NewAPIError(409, api.Error{Code: api.CodeBehind,
		Message: "pmg7(3) at 192.168.2.129 has a longer committed log"})}
	r := runFake(t, f, "", "promote", "--force")
	if r.code != ExitError || !strings.HasPrefix(r.stderr, "WARNING: ") ||
		!strings.HasSuffix(r.stderr, "\npmgcm: pmg7(3) at 192.168.2.129 has a longer committed log\n"+promoteHints[api.CodeBehind]+"\n") {
		t.Errorf("forced, behind: exit %d, stderr %q", r.code, r.stderr)
	}
	if !slices.Equal(f.calls, []string{"promote"}) || r.stdout != "" {
		t.Errorf("forced, behind: calls %v, stdout %q", f.calls, r.stdout)
	}
}

// TestPromoteForceWarnsFirst checks that the split-brain warning is on stderr before the
// daemon is asked anything, and that off a terminal --force is the consent.
func TestPromoteForceWarnsFirst(t *testing.T) {
	f := forcedFake()
	var stderr bytes.Buffer
	atCall := stderrAtFirstCall(f, &stderr)
	r := runEnv(t, context.Background(), env{stderr: &stderr}, f, "promote", "--force")
	if r.code != ExitOK || r.stdout != forcedOut {
		t.Fatalf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if seen, called := atCall(); !called || seen != r.stderr || !strings.HasPrefix(seen, "WARNING: ") {
		t.Errorf("stderr at the first call = %q (called %v), want the whole warning %q", seen, called, r.stderr)
	}
	golden(t, "promote_force_warning.golden", r.stderr)
	for _, s := range []string{"lost for good", "split brain", "pmgcm status", "powered off",
		"from every node, not only from this one", "fenced", "pmgcm sync --master_ip <this node's IP>"} {
		if !strings.Contains(r.stderr, s) {
			t.Errorf("the warning does not say %q", s)
		}
	}
	if !f.gotForce || !slices.Equal(f.calls, []string{"promote", "status"}) {
		t.Errorf("force %v, calls %v", f.gotForce, f.calls)
	}
}

func TestPromoteForceOnTerminal(t *testing.T) {
	for _, answers := range [][]string{{"n"}, {""}, {"yess"}, nil} {
		f := forcedFake()
		term := &fakeTerm{answers: answers}
		r := runEnv(t, context.Background(), env{term: term}, f, "promote", "--force")
		if r.code != ExitError || r.stdout != "" || !strings.HasPrefix(r.stderr, "WARNING: "+forcePromote.headline+"\n") ||
			!strings.HasSuffix(r.stderr, "\npmgcm: promote cancelled: nothing was changed\n") {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", answers, r.code, r.stdout, r.stderr)
		}
		if len(f.calls) != 0 || !slices.Equal(term.asked, []string{"Force this node to be the master? [y/N]: "}) {
			t.Errorf("%q: calls %v, asked %q", answers, f.calls, term.asked)
		}
	}

	f := forcedFake()
	term := &fakeTerm{answers: []string{"y"}}
	r := runEnv(t, context.Background(), env{term: term}, f, "promote", "--force")
	if r.code != ExitOK || r.stdout != forcedOut || !f.gotForce || len(term.asked) != 1 {
		t.Errorf("y: exit %d, stdout %q, stderr %q, force %v, asked %q", r.code, r.stdout, r.stderr, f.gotForce, term.asked)
	}

	// --yes (-y) skips the question, not the warning.
	for _, yes := range []string{"--yes", "-y"} {
		f := forcedFake()
		term := &fakeTerm{answers: []string{"n"}}
		r := runEnv(t, context.Background(), env{term: term}, f, "promote", "--force", yes)
		if r.code != ExitOK || r.stdout != forcedOut || !strings.Contains(r.stderr, "split brain") || len(term.asked) != 0 || !f.gotForce {
			t.Errorf("%s: exit %d, stdout %q, stderr %q, asked %q", yes, r.code, r.stdout, r.stderr, term.asked)
		}
	}
}

func TestPromoteForceOutput(t *testing.T) {
	// Without this node's IP (status failing, or no local row), the advice names it.
	for name, f := range map[string]*fakeAPI{
		"status error": {errs: map[string]error{"status": errors.New("busy")}},
		"no local row": {status: &api.Status{Cluster: &api.Cluster{ID: "c0ffee"}, Nodes: []api.Node{{CID: 2, IP: "192.168.2.128"}}}},
	} {
		f.promote = forcedFake().promote
		r := runFake(t, f, "", "promote", "--force")
		want := "node pmg5(1) is now the master of epoch 3\n" +
			"fenced: cid 2, cid 3: run 'pmgcm sync --master_ip <this node's ip>' on each to bring it back\n"
		if r.code != ExitOK || r.stdout != want {
			t.Errorf("%s: exit %d, stdout %q, stderr %q", name, r.code, r.stdout, r.stderr)
		}
	}

	// Nothing fenced: no advice, and no status call.
	f := forcedFake()
	f.promote.Fenced = nil
	r := runFake(t, f, "", "promote", "--force", "--yes")
	if r.code != ExitOK || r.stdout != "node pmg5(1) is now the master of epoch 3\n" || !slices.Equal(f.calls, []string{"promote"}) {
		t.Errorf("none fenced: exit %d, stdout %q, calls %v", r.code, r.stdout, f.calls)
	}

	// With -o json stdout holds only the JSON; the advice goes to stderr after the warning.
	r = runFake(t, forcedFake(), "", "promote", "--force", "-o", "json")
	wantJSON := "{\n  \"cid\": 1,\n  \"name\": \"pmg5\",\n  \"forced\": true,\n  \"epoch\": 3,\n  \"fenced\": [\n    2,\n    3\n  ]\n}\n"
	if r.code != ExitOK || r.stdout != wantJSON ||
		!strings.HasSuffix(r.stderr, splitBrainWarning+"fenced: cid 2, cid 3: run 'pmgcm sync --master_ip 192.168.2.127' on each to bring it back\n") {
		t.Errorf("json: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
}

func TestPromoteBadArguments(t *testing.T) {
	for _, args := range [][]string{{"now"}, {"-o", "yaml"}, {"--force=maybe"}, {"--master_ip", "1.2.3.4"}} {
		f := forcedFake()
		r := runEnv(t, context.Background(), env{term: &fakeTerm{answers: []string{"y"}}}, f, append([]string{"promote"}, args...)...)
		if r.code != ExitUsage || !strings.HasPrefix(r.stderr, "pmgcm: ") || !strings.Contains(r.stderr, "Usage:") || len(f.calls) != 0 {
			t.Errorf("%q: exit %d, stderr %q, calls %v", args, r.code, r.stderr, f.calls)
		}
	}
}

func TestPromoteHelp(t *testing.T) {
	r := runFake(t, &fakeAPI{}, "", "promote", "--help")
	if r.code != ExitOK || r.stderr != "" {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	golden(t, "promote_help.golden", r.stdout)
	for _, s := range []string{"pmgcm promote --force", "pmgcm sync --master_ip <master_ip>", "split brain", "--yes"} {
		if !strings.Contains(r.stdout, s) {
			t.Errorf("help does not say %q", s)
		}
	}
}

// deleteForceFake answers a forced delete of cid 2 on pmg5, whose status afterwards shows
// the members in others besides itself.
func deleteForceFake(others ...api.Node) *fakeAPI {
	st := &api.Status{Cluster: &api.Cluster{ID: "c0ffee", Epoch: 3, LeaderCID: 1},
		Nodes: append([]api.Node{{CID: 1, Name: "pmg5", IP: "192.168.2.127", Role: api.RoleMaster, State: api.StateActive, Local: true}}, others...)}
	return &fakeAPI{del: &api.DeleteResponse{CID: 2, Name: "pmg6", IP: "192.168.2.128", TokenRotated: true}, status: st}
}

func TestDeleteForce(t *testing.T) {
	// Off a terminal: the warning first, then the forced delete; the survivor is alone.
	f := deleteForceFake()
	var stderr bytes.Buffer
	atCall := stderrAtFirstCall(f, &stderr)
	r := runEnv(t, context.Background(), env{stderr: &stderr}, f, "delete", "--force", "2")
	if r.code != ExitOK || r.stdout != "deleted cid 2 (pmg6, 192.168.2.128)\njoin token rotated: the deleted node knew it; print the new one with pmgcm join-cmd\n" {
		t.Fatalf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	wantWarn := "WARNING: " + forceDelete(2).headline + "\n" + splitBrainWarning
	if seen, called := atCall(); r.stderr != wantWarn || !called || seen != wantWarn {
		t.Errorf("stderr %q, at the first call %q (called %v)", r.stderr, seen, called)
	}
	if !f.gotForce || f.gotCID != 2 || !slices.Equal(f.calls, []string{"delete-node", "status"}) {
		t.Errorf("force %v, cid %d, calls %v", f.gotForce, f.gotCID, f.calls)
	}

	// Other members are left fenced: say which and how to bring them back.
	f = deleteForceFake(api.Node{CID: 4, Name: "pmg8"}, api.Node{CID: 3, Name: "pmg7"}, api.Node{CID: 2, Name: "pmg6"})
	r = runFake(t, f, "", "delete", "2", "--force", "--yes")
	want := "deleted cid 2 (pmg6, 192.168.2.128)\njoin token rotated: the deleted node knew it; print the new one with pmgcm join-cmd\n" +
		"fenced: cid 3, cid 4: run 'pmgcm sync --master_ip 192.168.2.127' on each to bring it back\n"
	if r.code != ExitOK || r.stdout != want {
		t.Errorf("others: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}

	// Status failing after the delete: the advice stays general.
	f = deleteForceFake()
	f.errs = map[string]error{"status": errors.New("busy")}
	r = runFake(t, f, "", "delete", "2", "--force", "-o", "json")
	if r.code != ExitOK || !strings.HasPrefix(r.stdout, "{\n  \"cid\": 2,") ||
		!strings.HasSuffix(r.stderr, "any other member is fenced: run 'pmgcm sync --master_ip <this node's ip>' on it to bring it back\n") {
		t.Errorf("status error: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}

	// On a terminal: asked, and declined means nothing is sent; --yes skips the question.
	for _, answers := range [][]string{{"n"}, nil} {
		f := deleteForceFake()
		term := &fakeTerm{answers: answers}
		r := runEnv(t, context.Background(), env{term: term}, f, "delete", "--force", "2")
		if r.code != ExitError || r.stdout != "" || !strings.HasPrefix(r.stderr, wantWarn) ||
			!strings.HasSuffix(r.stderr, "pmgcm: delete cancelled: nothing was changed\n") {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", answers, r.code, r.stdout, r.stderr)
		}
		if len(f.calls) != 0 || !slices.Equal(term.asked, []string{"Force the removal of cid 2? [y/N]: "}) {
			t.Errorf("%q: calls %v, asked %q", answers, f.calls, term.asked)
		}
	}
	f = deleteForceFake()
	term := &fakeTerm{answers: []string{"y"}}
	if r := runEnv(t, context.Background(), env{term: term}, f, "delete", "--force", "2"); r.code != ExitOK || !f.gotForce {
		t.Errorf("y: exit %d, stderr %q", r.code, r.stderr)
	}
	f = deleteForceFake()
	term = &fakeTerm{}
	if r := runEnv(t, context.Background(), env{term: term}, f, "delete", "--force", "-y", "2"); r.code != ExitOK || !f.gotForce || len(term.asked) != 0 {
		t.Errorf("-y: exit %d, stderr %q, asked %q", r.code, r.stderr, term.asked)
	}

	// Without --force: no warning, no question, no status call, Force false.
	f = deleteForceFake()
	term = &fakeTerm{}
	r = runEnv(t, context.Background(), env{term: term}, f, "delete", "2")
	if r.code != ExitOK || r.stderr != "" || f.gotForce || len(term.asked) != 0 || !slices.Equal(f.calls, []string{"delete-node"}) {
		t.Errorf("no force: exit %d, stderr %q, force %v, asked %q, calls %v", r.code, r.stderr, f.gotForce, term.asked, f.calls)
	}

	// A delete refused for lack of quorum points at --force.
	f = &fakeAPI{errs: map[string]error{"delete-node": client.NewAPIError(503, api.Error{Code: api.CodeNoQuorum, Message: "no quorum: 1 of 2 voters reachable"})}}
	r = runFake(t, f, "", "delete", "2")
	if r.code != ExitError || r.stderr != "pmgcm: no quorum: 1 of 2 voters reachable\n"+deleteHints[api.CodeNoQuorum]+"\n" {
		t.Errorf("no quorum: exit %d, stderr %q", r.code, r.stderr)
	}

	// A bad CID is a usage error before any warning.
	f = deleteForceFake()
	r = runFake(t, f, "", "delete", "--force", "0")
	if r.code != ExitUsage || strings.Contains(r.stderr, "WARNING") || len(f.calls) != 0 {
		t.Errorf("bad cid: exit %d, stderr %q, calls %v", r.code, r.stderr, f.calls)
	}
}
