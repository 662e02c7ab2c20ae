package daemon

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pmgcm/pmgcm/api"
)

func TestParseDiskSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want DiskSize
	}{
		{"5%", DiskSize{Percent: 5}},
		{" 2.5 % ", DiskSize{Percent: 2.5}},
		{"0", DiskSize{}},
		{"1048576", DiskSize{Bytes: 1 << 20}},
		{"500MiB", DiskSize{Bytes: 500 << 20}},
		{"500M", DiskSize{Bytes: 500 << 20}},
		{"2G", DiskSize{Bytes: 2 << 30}},
		{"2g", DiskSize{Bytes: 2 << 30}},
		{"1GB", DiskSize{Bytes: 1e9}},
		{"1.5GiB", DiskSize{Bytes: 3 << 29}},
		{"64 KiB", DiskSize{Bytes: 64 << 10}},
	} {
		got, err := ParseDiskSize(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseDiskSize(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
		// String reads back to the same value.
		if back, err := ParseDiskSize(got.String()); err != nil || back.Percent != got.Percent ||
			(got.Bytes != 0 && (back.Bytes < got.Bytes*99/100 || back.Bytes > got.Bytes*101/100)) {
			t.Errorf("ParseDiskSize(%q).String() = %q reads back as %+v, %v", tc.in, got.String(), back, err)
		}
	}
	for _, bad := range []string{"", "%", "100%", "-1%", "abc", "5XB", "-5M", "1e400", "NaN%", "5 %%"} {
		if got, err := ParseDiskSize(bad); err == nil {
			t.Errorf("ParseDiskSize(%q) = %+v, want an error", bad, got)
		}
	}
}

func FuzzParseDiskSize(f *testing.F) {
	for _, s := range []string{"5%", "500MiB", "2G", "0", "1.5 TB"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDiskSize(s)
		if err != nil {
			return
		}
		if d.validate() != nil {
			t.Fatalf("ParseDiskSize(%q) = %+v, which does not validate", s, d)
		}
		if _, err := ParseDiskSize(d.String()); err != nil {
			t.Fatalf("ParseDiskSize(%q).String() = %q does not parse: %v", s, d.String(), err)
		}
	})
}

func TestDiskThreshold(t *testing.T) {
	if got := (DiskSize{Percent: 5}).threshold(1000); got != 50 {
		t.Errorf("5%% of 1000 = %d", got)
	}
	if got := (DiskSize{Bytes: 7}).threshold(1000); got != 7 {
		t.Errorf("7 bytes of 1000 = %d", got)
	}
	s := &guardReading{Free: 49, Threshold: 50, Total: 1000}
	if !s.active() {
		t.Error("49 free below 50: guard not active")
	}
	s.Free = 50
	if s.active() {
		t.Error("50 free at 50: guard active")
	}
	if (&guardReading{Free: 0, Threshold: 50, Err: errTest}).active() {
		t.Error("a failed reading trips the guard")
	}
}

var errTest = errors.New("statfs failed")

func TestClockOffset(t *testing.T) {
	sent := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	rtt := 200 * time.Millisecond
	// The remote read its clock in the middle of the round trip, and it is 3 s ahead.
	remote := sent.Add(100 * time.Millisecond).Add(3 * time.Second)
	if got := clockOffset(remote, sent, rtt); got != 3*time.Second {
		t.Errorf("offset %s, want 3s", got)
	}
	// In step: the remote's reading is the midpoint.
	if got := clockOffset(sent.Add(100*time.Millisecond), sent, rtt); got != 0 {
		t.Errorf("offset %s, want 0", got)
	}
	// Behind.
	if got := clockOffset(sent.Add(-2*time.Second), sent, 0); got != -2*time.Second {
		t.Errorf("offset %s, want -2s", got)
	}
}

func TestOpsWarnings(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	rows := []api.Node{
		{CID: 1, Name: "node1", State: api.StateActive, ClockOffsetSeconds: f(0)},
		{CID: 2, Name: "node2", State: api.StateActive, ClockOffsetSeconds: f(1.5)}, // the master
		{CID: 3, Name: "node3", State: api.StateActive, ClockOffsetSeconds: f(4.0)}, // 2.5 s ahead of it
		{CID: 4, Name: "node4", State: api.StateActive},                             // an old node: no clock
		{CID: 5, Name: "node5", State: api.StateActive, ClockOffsetSeconds: f(1), DiskGuard: &api.DiskGuard{Active: true, FreePercent: 3.1, MinFree: "5%", FreeBytes: 2 << 20}}, // disk
	}
	warns := opsWarnings(rows, 2)
	all := strings.Join(warns, "\n")
	if len(warns) != 2 || !strings.Contains(all, "node3: clock differs from the master's (node2) by +2.5s") ||
		!strings.Contains(all, "node5: disk guard: 3.1% free below 5%") {
		t.Fatalf("warnings:\n%s", all)
	}
	if o := rows[0].ClockOffsetSeconds; o == nil || *o != -1.5 {
		t.Errorf("node1 offset to the master: %v, want -1.5", o)
	}
	if rows[3].ClockOffsetSeconds != nil {
		t.Error("a node without a clock got an offset")
	}
	// Without a master (or an old master), no skew check at all.
	rows = []api.Node{{CID: 1, Name: "a", ClockOffsetSeconds: f(0)}, {CID: 2, Name: "b", ClockOffsetSeconds: f(9)}}
	if w := opsWarnings(rows, 0); len(w) != 0 || rows[1].ClockOffsetSeconds != nil {
		t.Errorf("no master: warnings %q, offset %v", w, rows[1].ClockOffsetSeconds)
	}
}

// TestMailHealthReasons: the mail check names each thing that keeps the node from taking
// mail, the maintenance hook included.
func TestMailHealthReasons(t *testing.T) {
	d := &Daemon{cfg: Config{DataDir: t.TempDir()}, stop: make(chan struct{})}
	d.ops = newOpsState(d.cfg, hclog.NewNullLogger())
	got := strings.Join(d.mailHealth(), "\n")
	if !strings.Contains(got, "SMTP intake is off (--smtp-port 0)") || strings.Contains(got, "maintenance") {
		t.Fatalf("reasons: %q", got)
	}
	d.setMaintenanceHook(func() (bool, string) { return true, "set by pmgcm maintenance on" })
	if got := strings.Join(d.mailHealth(), "\n"); !strings.Contains(got, "in maintenance: set by pmgcm maintenance on") {
		t.Fatalf("reasons with the hook: %q", got)
	}
	d.setMaintenanceHook(func() (bool, string) { return false, "" })
	d.ops.disk.state.Store(&guardReading{Free: 1, Total: 100, Threshold: 5})
	d.ops.disk.min = DiskSize{Percent: 5}
	if got := strings.Join(d.mailHealth(), "\n"); !strings.Contains(got, "disk guard: 1.0% free") || strings.Contains(got, "maintenance") {
		t.Fatalf("reasons with a full disk: %q", got)
	}
	close(d.stop)
	if got := strings.Join(d.mailHealth(), "\n"); !strings.Contains(got, "shutting down") {
		t.Fatalf("reasons while stopping: %q", got)
	}
}
