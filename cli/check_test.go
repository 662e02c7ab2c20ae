package cli

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/api"
)

// opsFake answers Check and Maintenance.
type opsFake struct {
	*fakeAPI
	report   *api.CheckReport
	progress []api.CheckProgress
	maint    *api.MaintenanceResponse
	gotOn    bool
	gotCID   uint64
	gotVer   bool
}

func (f *opsFake) Check(_ context.Context, verify bool, progress func(api.CheckProgress)) (*api.CheckReport, error) {
	f.gotVer = verify
	for _, p := range f.progress {
		if progress != nil {
			progress(p)
		}
	}
	return f.report, f.err
}

func (f *opsFake) Maintenance(_ context.Context, on bool, cid uint64) (*api.MaintenanceResponse, error) {
	f.gotOn, f.gotCID = on, cid
	return f.maint, f.err
}

func cleanReport() *api.CheckReport {
	nodes := []api.CheckNode{
		{CID: 1, Name: "pmg1", IP: "192.0.2.1", ConfigSHA256: "0123456789abcdef", Entries: 4, MailSHA256: "aa", Messages: 30000},
		{CID: 2, Name: "pmg2", IP: "192.0.2.2", ConfigSHA256: "0123456789abcdef", Entries: 4, MailSHA256: "aa", Messages: 30000},
	}
	return &api.CheckReport{Consistent: true, Index: 57, Nodes: nodes, Differences: []api.CheckDifference{}, DurationSeconds: 0.42}
}

func TestCheckOutput(t *testing.T) {
	f := &opsFake{fakeAPI: &fakeAPI{}, report: cleanReport()}
	r := runFake(t, f, "", "check")
	if r.code != ExitOK || r.stderr != "" {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	golden(t, "check_clean.txt", r.stdout)

	bad := cleanReport()
	bad.Consistent = false
	bad.Verified = true
	bad.Since = time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	bad.Differences = []api.CheckDifference{{What: "mail", CID: 2, Node: "pmg2", ID: "1-17",
		Detail: "the body of message 1-17 on disk is damaged (corrupt)",
		Repair: "on pmg2: pmgcm quarantine show 1-17 >/dev/null (moves the damaged copy aside and fetches it again from a peer)"}}
	f = &opsFake{fakeAPI: &fakeAPI{}, report: bad}
	r = runFake(t, f, "", "check", "--verify-bodies")
	if r.code != ExitError || !f.gotVer || !strings.Contains(r.stderr, "the replicas differ: 1 difference") {
		t.Fatalf("exit %d, verify %v, stderr %q", r.code, f.gotVer, r.stderr)
	}
	golden(t, "check_differs.txt", r.stdout)

	r = runFake(t, f, "", "check", "-o", "json")
	var got api.CheckReport
	if r.code != ExitError || json.Unmarshal([]byte(r.stdout), &got) != nil || len(got.Differences) != 1 || got.Differences[0].ID != "1-17" {
		t.Fatalf("json: exit %d, stdout %q", r.code, r.stdout)
	}
}

// TestCheckProgress: a progress line on a terminal only, never with -o json or when
// stderr is not a terminal.
func TestCheckProgress(t *testing.T) {
	prog := []api.CheckProgress{{Phase: "config", Nodes: 2}, {Phase: "mail", Checked: 2048, Total: 30000, Nodes: 2}}
	f := &opsFake{fakeAPI: &fakeAPI{}, report: cleanReport(), progress: prog}
	r := runEnv(t, context.Background(), env{stderrTTY: true}, f, "check")
	want := "\rcheck: configuration of 2 nodes\rcheck: mail: 2048 of 30000 messages here, 0 of 2 nodes done\n"
	if r.code != ExitOK || r.stderr != want {
		t.Fatalf("terminal: exit %d, stderr %q, want %q", r.code, r.stderr, want)
	}
	for _, args := range [][]string{{"check", "-o", "json"}} {
		r = runEnv(t, context.Background(), env{stderrTTY: true}, f, args...)
		if r.code != ExitOK || r.stderr != "" {
			t.Fatalf("%v: stderr %q", args, r.stderr)
		}
	}
	r = runEnv(t, context.Background(), env{}, f, "check")
	if r.code != ExitOK || r.stderr != "" {
		t.Fatalf("piped: stderr %q", r.stderr)
	}
}

func TestMaintenanceCommand(t *testing.T) {
	f := &opsFake{fakeAPI: &fakeAPI{}, maint: &api.MaintenanceResponse{CID: 1, Name: "pmg1", On: true, HandedOver: 2}}
	r := runFake(t, f, "", "maintenance", "on")
	if r.code != ExitOK || !f.gotOn || f.gotCID != 0 ||
		r.stdout != "pmg1 (cid 1) is in maintenance: SMTP intake closed, it does not stay master\nmastership handed over to cid 2\n" {
		t.Fatalf("on: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	f.maint = &api.MaintenanceResponse{CID: 3, Name: "pmg3"}
	r = runFake(t, f, "", "maintenance", "off", "--cid", "3")
	if r.code != ExitOK || f.gotOn || f.gotCID != 3 || r.stdout != "pmg3 (cid 3) is back in service\n" {
		t.Fatalf("off: exit %d, stdout %q", r.code, r.stdout)
	}
	f.maint = &api.MaintenanceResponse{CID: 1, Name: "pmg1", On: true, Warning: "this node is the only voter"}
	r = runFake(t, f, "", "maintenance", "on")
	if r.code != ExitOK || r.stderr != "warning: this node is the only voter\n" {
		t.Fatalf("warning: stderr %q", r.stderr)
	}
	for _, args := range [][]string{{"maintenance"}, {"maintenance", "maybe"}, {"maintenance", "on", "off"}} {
		if r := runFake(t, f, "", args...); r.code != ExitUsage {
			t.Errorf("%v: exit %d, want %d", args, r.code, ExitUsage)
		}
	}
}

func TestBackupLine(t *testing.T) {
	at := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	nodes := []api.Node{{CID: 1, Name: "pmg1"}, {CID: 2, Name: "pmg2", Backup: &api.BackupStatus{Last: at, LastSuccess: at,
		File: "/var/backups/pmgcm/pmgcm-20261201T090000Z.backup", Size: 3 << 20}}}
	if got, want := backupLine(nodes, time.UTC), "last scheduled backup: pmg2(2) at 2026-12-01 09:00:00: ok, 3.0 MiB, /var/backups/pmgcm/pmgcm-20261201T090000Z.backup"; got != want {
		t.Errorf("got %q\nwant %q", got, want)
	}
	nodes = append(nodes, api.Node{CID: 3, Name: "pmg3", Backup: &api.BackupStatus{Last: at.Add(time.Hour), LastSuccess: at, Error: "disk full"}})
	if got, want := backupLine(nodes, time.UTC), "last scheduled backup: pmg3(3) at 2026-12-01 10:00:00: FAILED (see the warning below); last good one 2026-12-01 09:00:00"; got != want {
		t.Errorf("got %q\nwant %q", got, want)
	}
	if got := backupLine(nodes[:1], time.UTC); got != "" {
		t.Errorf("no backups: %q", got)
	}
}
