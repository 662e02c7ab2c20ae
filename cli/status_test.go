package cli

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/api/client"
)

func TestFormatUptime(t *testing.T) {
	tests := []struct {
		seconds float64
		want    string
	}{
		{0, "00:00"},
		{-5, "00:00"},
		{59.9, "00:00"},
		{60, "00:01"},
		{21*3600 + 18*60 + 59, "21:18"},
		{86399, "23:59"},
		{86400, "1 day 00:00"},
		{86400 + 21*3600 + 18*60, "1 day 21:18"},
		{2 * 86400, "2 days 00:00"},
		{3*86400 + 4*3600 + 5*60, "3 days 04:05"},
		{400*86400 + 3600, "400 days 01:00"},
	}
	for _, tt := range tests {
		if got := formatUptime(tt.seconds); got != tt.want {
			t.Errorf("formatUptime(%v) = %q, want %q", tt.seconds, got, tt.want)
		}
	}
}

func TestFormatPercent(t *testing.T) {
	for in, want := range map[float64]string{0: "0%", 41.4: "41%", 79.5: "80%", 80.49: "80%", 100: "100%"} {
		if got := formatPercent(in); got != want {
			t.Errorf("formatPercent(%v) = %q, want %q", in, got, want)
		}
	}
}

func sys(uptime, load, mem, disk float64) *api.SysInfo {
	return &api.SysInfo{UptimeSeconds: uptime, Load1: load, MemPercent: mem, DiskPercent: disk}
}

// threeNodes is a cluster with a master, a syncing node and a down node, listed out of CID
// order.
func threeNodes() *api.Status {
	return &api.Status{
		Cluster: &api.Cluster{
			ID: "c0ffee", Epoch: 1, LeaderCID: 1,
			CreatedAt: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
			Warnings:  []string{"quorum lost: 1 of 3 voters reachable; run 'pmgcm promote --force' on a healthy node"},
		},
		Nodes: []api.Node{
			{CID: 3, Name: "pmg7", IP: "192.168.2.129", Role: api.RoleNode, State: api.StateDown,
				Error: "dial tcp 192.168.2.129:8006:\nconnection refused"},
			{CID: 1, Name: "pmg5", IP: "192.168.2.127", Role: api.RoleMaster, State: api.StateActive,
				Local: true, Sys: sys(86400+21*3600+18*60, 0.3, 80.2, 41)},
			{CID: 2, Name: "pmg6-with-a-long-name", IP: "192.168.100.100", Role: api.RoleNode,
				State: api.StateSyncing, Sys: sys(3*86400+4*3600+5*60, 12.345, 5, 99.5)},
		},
	}
}

func TestStatusTableGolden(t *testing.T) {
	tests := []struct {
		name   string
		status *api.Status
		args   []string
	}{
		{"status_manual.golden", &api.Status{
			Cluster: &api.Cluster{ID: "c0ffee", Epoch: 1, LeaderCID: 1},
			Nodes: []api.Node{{CID: 1, Name: "pmg5", IP: "192.168.2.127", Role: api.RoleMaster,
				State: api.StateActive, Sys: sys(86400+21*3600+18*60, 0.30, 80, 41)}},
		}, nil},
		{"status_three_nodes.golden", threeNodes(), nil},
		{"status_single_node.golden", &api.Status{
			Nodes: []api.Node{{Name: "pmg5", IP: "192.168.2.127", Role: api.RoleNone,
				State: api.StateActive, Sys: sys(600, 0.05, 20, 3)}},
		}, []string{"--list-single-node"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runFake(t, &fakeAPI{status: tt.status}, "", append([]string{"status"}, tt.args...)...)
			if r.code != ExitOK || r.stderr != "" {
				t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
			}
			golden(t, tt.name, r.stdout)
		})
	}
}

// TestStatusColumnsAligned checks that every right-aligned value of a full-width row ends
// under the last letter of its header word.
func TestStatusColumnsAligned(t *testing.T) {
	r := runFake(t, &fakeAPI{status: threeNodes()}, "", "status")
	lines := strings.Split(r.stdout, "\n")
	header, row := lines[0], lines[1] // pmg5, cid 1
	for _, col := range []string{"UPTIME", "LOAD", "MEM", "DISK"} {
		end := strings.Index(header, col) + len(col)
		if end > len(row) || row[end-1] == ' ' || (end < len(row) && row[end] != ' ') {
			t.Errorf("column %s: value does not end at %d in\n%s\n%s", col, end, header, row)
		}
	}
	if !strings.HasPrefix(row, "pmg5(1) ") {
		t.Errorf("row = %q", row)
	}
}

func TestStatusNoCluster(t *testing.T) {
	local := &api.Status{Nodes: []api.Node{{Name: "pmg5", IP: "10.0.0.1", Role: api.RoleNone, State: api.StateActive}}}
	r := runFake(t, &fakeAPI{status: local}, "", "status")
	if r.code != ExitOK || r.stdout != "no cluster defined\n" {
		t.Errorf("exit %d, stdout %q", r.code, r.stdout)
	}

	r = runFake(t, &fakeAPI{status: local}, "", "status", "-o", "json")
	if r.code != ExitOK {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if r.stdout != "{\n  \"cluster\": null,\n  \"nodes\": []\n}\n" {
		t.Errorf("json = %q", r.stdout)
	}
}

func TestStatusJSON(t *testing.T) {
	for _, tt := range []struct {
		name      string
		status    *api.Status
		args      []string
		cluster   bool
		wantNodes int
	}{
		{"cluster", threeNodes(), nil, true, 3},
		{"single node listed", &api.Status{Nodes: []api.Node{{Name: "a", Role: api.RoleNone}}}, []string{"--list-single-node"}, false, 1},
		{"nil nodes", &api.Status{Cluster: &api.Cluster{ID: "x"}}, nil, true, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := runFake(t, &fakeAPI{status: tt.status}, "", append([]string{"status", "-o", "json"}, tt.args...)...)
			if r.code != ExitOK {
				t.Fatalf("exit %d: %s", r.code, r.stderr)
			}
			if !strings.HasSuffix(r.stdout, "}\n") {
				t.Errorf("no trailing newline: %q", r.stdout)
			}
			var raw map[string]json.RawMessage
			if err := json.Unmarshal([]byte(r.stdout), &raw); err != nil {
				t.Fatal(err)
			}
			if (string(raw["cluster"]) != "null") != tt.cluster {
				t.Errorf("cluster = %s", raw["cluster"])
			}
			var nodes []map[string]any
			if err := json.Unmarshal(raw["nodes"], &nodes); err != nil || nodes == nil || len(nodes) != tt.wantNodes {
				t.Fatalf("nodes = %s (%v)", raw["nodes"], err)
			}
			for _, n := range nodes {
				for _, f := range []string{"cid", "name", "ip", "role", "state"} {
					if _, ok := n[f]; !ok {
						t.Errorf("node lacks %q: %v", f, n)
					}
				}
			}
			var back api.Status
			if err := json.Unmarshal([]byte(r.stdout), &back); err != nil {
				t.Fatal(err)
			}
			if tt.name == "cluster" && (back.Cluster.ID != "c0ffee" || back.Nodes[0].CID != 3 || back.Nodes[0].Error == "") {
				t.Errorf("status not printed as-is: %+v", back)
			}
		})
	}
}

func TestStatusErrors(t *testing.T) {
	apiErr := client.NewAPIError(503, api.Error{Code: api.CodeUnavailable, Message: "daemon is starting", Hint: "wait a few seconds"})
	r := runFake(t, &fakeAPI{err: apiErr}, "", "status")
	if r.code != ExitError || r.stdout != "" || r.stderr != "pmgcm: daemon is starting\nwait a few seconds\n" {
		t.Errorf("api error: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}

	r = runFake(t, &fakeAPI{err: errors.New("boom")}, "", "status", "-o", "json")
	if r.code != ExitError || r.stderr != "pmgcm: boom\n" || r.stdout != "" {
		t.Errorf("plain error: exit %d, stderr %q", r.code, r.stderr)
	}

	for _, args := range [][]string{
		{"status", "extra"},
		{"status", "-o", "yaml"},
		{"status", "--no-such-flag"},
		{"status", "--timeout", "-1s"},
	} {
		f := &fakeAPI{status: threeNodes()}
		r := runFake(t, f, "", args...)
		if r.code != ExitUsage || !strings.HasPrefix(r.stderr, "pmgcm: ") || !strings.Contains(r.stderr, "Usage:") || r.stdout != "" {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", args, r.code, r.stdout, r.stderr)
		}
		if len(f.calls) != 0 {
			t.Errorf("%v: reached the daemon: %v", args, f.calls)
		}
	}
}

// TestStatusTableVersions: the line under the table names the cluster version and each
// node's build ("-" for a node that is down); a daemon that reports no cluster version
// (release 0.1.0) gets no such line.
func TestStatusTableVersions(t *testing.T) {
	st := &api.Status{
		Cluster: &api.Cluster{ID: "c", Version: 1},
		Nodes: []api.Node{
			{CID: 2, Name: "pmg2", State: api.StateActive, Version: "<=0.1.0", Level: 1},
			{CID: 1, Name: "pmg1", State: api.StateActive, Version: "v0.2.0", Level: 2},
			{CID: 3, Name: "pmg3", State: api.StateDown},
		},
	}
	var b strings.Builder
	if err := writeStatusTable(&b, st); err != nil {
		t.Fatal(err)
	}
	want := "cluster version 1; versions: pmg1(1) v0.2.0, pmg2(2) <=0.1.0, pmg3(3) -\n"
	if !strings.Contains(b.String(), want) {
		t.Errorf("table:\n%s\nwant the line %q", b.String(), want)
	}
	st.Cluster.Version = 0
	b.Reset()
	if err := writeStatusTable(&b, st); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), "cluster version") {
		t.Errorf("versions line without a cluster version:\n%s", b.String())
	}
}
