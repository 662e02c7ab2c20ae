package cli

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/api/client"
)

// syncStatus is joinStatus at the given cluster epoch.
func syncStatus(epoch uint64, state string, applied uint64) *api.Status {
	st := joinStatus(api.RoleNode, state, applied)
	st.Cluster.Epoch = epoch
	return st
}

// readmitFake answers a sync --master_ip on the fenced pmg6 (cid 2): re-admitted at epoch
// 3, then its status from before the re-admission (epoch 2, still A), then the catch-up.
func readmitFake() *fakeAPI {
	return &fakeAPI{
		sync: &api.SyncResponse{Readmitted: true, MasterCID: 1, Epoch: 3, AppliedIndex: 0},
		statusSeq: []statusAnswer{
			{st: syncStatus(2, api.StateActive, 50)},
			{err: client.NewAPIError(503, api.Error{Code: api.CodeUnavailable, Message: "resetting"})},
			{st: syncStatus(3, api.StateSyncing, 10)},
			{st: syncStatus(3, api.StateSyncing, 60)},
			{st: syncStatus(3, api.StateActive, 100)},
		},
	}
}

const readmittedOut = "re-admitted by the master (cid 1) at epoch 3\n"

func TestSyncReadmitted(t *testing.T) {
	f := readmitFake()
	r := runEnv(t, context.Background(), env{timing: fast}, f, "sync", "--master_ip", "192.168.2.127")
	want := readmittedOut + "catching up: applied index 10 of 100\ncatching up: applied index 60 of 100\n" +
		"node pmg6(2) is in sync: state A\n"
	if r.code != ExitOK || r.stdout != want || r.stderr != "" {
		t.Errorf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if f.gotMasterIP != "192.168.2.127" || !slices.Equal(f.calls, []string{"sync", "status", "status", "status", "status", "status"}) {
		t.Errorf("master ip %q, calls %v", f.gotMasterIP, f.calls)
	}

	// The alias --master-ip, and an IPv6 address.
	f = readmitFake()
	r = runEnv(t, context.Background(), env{timing: fast}, f, "sync", "--master-ip=fd00::1", "--wait", "0")
	if r.code != ExitOK || r.stdout != readmittedOut || f.gotMasterIP != "fd00::1" || !slices.Equal(f.calls, []string{"sync"}) {
		t.Errorf("alias: exit %d, stdout %q, stderr %q, master ip %q, calls %v", r.code, r.stdout, r.stderr, f.gotMasterIP, f.calls)
	}
}

func TestSyncInSync(t *testing.T) {
	inSync := &api.SyncResponse{MasterCID: 1, Epoch: 1, AppliedIndex: 100}
	const out = "in sync with the master (cid 1): applied index 100\n"

	// --wait 0: the daemon's answer only.
	f := &fakeAPI{sync: inSync}
	r := runFake(t, f, "", "sync", "--wait", "0")
	if r.code != ExitOK || r.stdout != out || r.stderr != "" || f.gotMasterIP != "" || !slices.Equal(f.calls, []string{"sync"}) {
		t.Errorf("wait 0: exit %d, stdout %q, stderr %q, calls %v", r.code, r.stdout, r.stderr, f.calls)
	}

	// Following: the node is A at once.
	f = &fakeAPI{sync: inSync, status: syncStatus(1, api.StateActive, 100)}
	r = runEnv(t, context.Background(), env{timing: fast}, f, "sync", "--master_ip", "192.168.2.127")
	if r.code != ExitOK || r.stdout != out+"node pmg6(2) is in sync: state A\n" || !slices.Equal(f.calls, []string{"sync", "status"}) {
		t.Errorf("follow: exit %d, stdout %q, stderr %q, calls %v", r.code, r.stdout, r.stderr, f.calls)
	}

	// On a terminal the progress is one line rewritten.
	f = &fakeAPI{sync: inSync, statusSeq: []statusAnswer{{st: syncStatus(1, api.StateSyncing, 90)}, {st: syncStatus(1, api.StateActive, 100)}}}
	r = runEnv(t, context.Background(), env{term: &fakeTerm{}, stdoutTTY: true, timing: fast}, f, "sync")
	if r.code != ExitOK || r.stdout != out+"\rcatching up: applied index 90 of 100\nnode pmg6(2) is in sync: state A\n" {
		t.Errorf("terminal: exit %d, stdout %q", r.code, r.stdout)
	}
}

func TestSyncWaitExpiry(t *testing.T) {
	// A fenced node whose status never shows the new epoch is not taken for synced.
	f := readmitFake()
	f.statusSeq = []statusAnswer{{st: syncStatus(2, api.StateActive, 50)}}
	start := time.Now()
	r := runEnv(t, context.Background(), env{timing: fast}, f, "sync", "--master_ip", "192.168.2.127", "--wait", "50ms")
	if r.code != ExitError || r.stdout != readmittedOut || r.stderr != "pmgcm: not in sync after 50ms: see pmgcm status\n" {
		t.Errorf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v", d)
	}
}

func TestSyncInterrupted(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := readmitFake()
	f.statusSeq = []statusAnswer{{st: syncStatus(3, api.StateSyncing, 10)}}
	r := runEnv(t, ctx, env{timing: fast}, &cancellingAPI{fakeAPI: f, cancel: cancel}, "sync", "--master_ip", "192.168.2.127")
	want := "pmgcm: interrupted: stopped following the catch-up; the node goes on catching up in the background: see pmgcm status: context canceled\n"
	if r.code != ExitError || r.stderr != want {
		t.Errorf("exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestSyncDaemonErrors(t *testing.T) {
	tests := []struct {
		code, msg, hint string
		wantHint        string
	}{
		{api.CodeFenced, "this node was superseded at epoch 3 by pmg5(1)", "", syncHints[api.CodeFenced]},
		{api.CodeFenced, "this node was superseded at epoch 3 by pmg5(1)", "run 'pmgcm sync --master_ip 192.168.2.127'",
			"run 'pmgcm sync --master_ip 192.168.2.127'"},
		{api.CodeNotLeader, "192.168.2.128 is not the master", "", syncHints[api.CodeNotLeader]},
		{api.CodeNoQuorum, "no master: 1 of 3 voters reachable", "", syncHints[api.CodeNoQuorum]},
		{api.CodeUnreachable, "cannot reach 192.168.2.127:8006: connection refused", "", syncHints[api.CodeUnreachable]},
		{api.CodeInternal, "disk full", "", ""},
	}
	for _, tt := range tests {
		want := "pmgcm: " + tt.msg + "\n"
		if tt.wantHint != "" {
			want += tt.wantHint + "\n"
		}
		f := readmitFake()
		f.errs = map[string]error{"sync": client.NewAPIError(409, api.Error{Code: tt.code, Message: tt.msg, Hint: tt.hint})}
		r := runFake(t, f, "", "sync", "--master_ip", "192.168.2.127")
		if r.code != ExitError || r.stderr != want || r.stdout != "" {
			t.Errorf("%s: exit %d, stdout %q, stderr %q, want %q", tt.code, r.code, r.stdout, r.stderr, want)
		}
		if !slices.Equal(f.calls, []string{"sync"}) {
			t.Errorf("%s: calls %v", tt.code, f.calls)
		}
	}
}

func TestSyncBadArguments(t *testing.T) {
	for _, args := range [][]string{
		{"--master_ip", "pmg5"},
		{"--master_ip", ""},
		{"--master_ip", "192.168.2"},
		{"--master_ip", "192.168.2.127:8006"},
		{"--master_ip", "[fd00::1]"},
		{"--master_ip", "http://192.168.2.127"},
		{"--master-ip", "pmg5"},
		{"--master_ip"},
		{"192.168.2.127"},
		{"--wait", "-1s"},
		{"--wait", "soon"},
		{"--force"},
	} {
		f := readmitFake()
		r := runFake(t, f, "", append([]string{"sync"}, args...)...)
		if r.code != ExitUsage || !strings.HasPrefix(r.stderr, "pmgcm: ") || !strings.Contains(r.stderr, "Usage:") || r.stdout != "" {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", args, r.code, r.stdout, r.stderr)
		}
		if len(f.calls) != 0 {
			t.Errorf("%q: reached the daemon: %v", args, f.calls)
		}
	}
	r := runFake(t, readmitFake(), "", "sync", "--master_ip", "pmg5")
	if !strings.HasPrefix(r.stderr, `pmgcm: bad --master_ip "pmg5": want the IP address of the master`) {
		t.Errorf("stderr = %q", r.stderr)
	}
}

func TestSyncHelp(t *testing.T) {
	r := runFake(t, &fakeAPI{}, "", "sync", "--help")
	if r.code != ExitOK || r.stderr != "" {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	golden(t, "sync_help.golden", r.stdout)
	if !strings.Contains(r.stdout, "--master_ip MASTER_IP") || strings.Contains(r.stdout, "--master-ip") {
		t.Error("help does not show --master_ip, or shows its hidden alias")
	}
}
