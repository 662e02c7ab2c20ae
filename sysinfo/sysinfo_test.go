package sysinfo

import (
	"math"
	"testing"
)

func TestParseUptime(t *testing.T) {
	tests := []struct {
		in      string
		want    float64
		wantErr bool
	}{
		{"163078.88 2454614.65\n", 163078.88, false},
		{"5.00 1.00", 5, false},
		{"", 0, true},
		{"abc 1.0\n", 0, true},
		{"-1.0 2.0\n", 0, true},
	}
	for _, tt := range tests {
		got, err := parseUptime(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("parseUptime(%q) = %v, %v; want %v, err %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestParseLoadavg(t *testing.T) {
	tests := []struct {
		in      string
		want    float64
		wantErr bool
	}{
		{"0.30 0.25 0.20 1/123 4567\n", 0.30, false},
		{"12.75 3.00 1.00 3/900 1\n", 12.75, false},
		{"\n", 0, true},
		{"x y z", 0, true},
	}
	for _, tt := range tests {
		got, err := parseLoadavg(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("parseLoadavg(%q) = %v, %v; want %v, err %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

const meminfoModern = `MemTotal:       16000000 kB
MemFree:         1000000 kB
MemAvailable:    3200000 kB
Buffers:          200000 kB
Cached:          2000000 kB
SwapCached:            0 kB
HugePages_Total:       0
Hugepagesize:       2048 kB
`

// meminfoOld is from a kernel without MemAvailable (before 3.14).
const meminfoOld = `MemTotal:        1000 kB
MemFree:          100 kB
Buffers:           50 kB
Cached:           100 kB
`

func TestParseMeminfo(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    float64
		wantErr bool
	}{
		{"modern", meminfoModern, 80, false},
		{"fallback without MemAvailable", meminfoOld, 75, false},
		{"available above total", "MemTotal: 10 kB\nMemAvailable: 20 kB\n", 0, false},
		{"no total", "MemFree: 10 kB\n", 0, true},
		{"zero total", "MemTotal: 0 kB\nMemAvailable: 0 kB\n", 0, true},
		{"no free at all", "MemTotal: 10 kB\n", 0, true},
		{"garbage number", "MemTotal: ten kB\n", 0, true},
		{"empty", "", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseMeminfo(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if math.Abs(got-tt.want) > 1e-9 {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestDiskPercent(t *testing.T) {
	tests := []struct {
		name                  string
		blocks, bfree, bavail uint64
		want                  float64
	}{
		// 100 blocks, 60 free of which 50 available to users: df shows 40/(40+50).
		{"reserved blocks", 100, 60, 50, 40.0 * 100 / 90},
		{"no reserve", 100, 59, 59, 41},
		{"full", 100, 5, 0, 100},
		{"empty fs", 0, 0, 0, 0},
		{"inconsistent free", 10, 20, 20, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := diskPercent(tt.blocks, tt.bfree, tt.bavail); math.Abs(got-tt.want) > 1e-9 {
				t.Errorf("diskPercent(%d, %d, %d) = %v, want %v", tt.blocks, tt.bfree, tt.bavail, got, tt.want)
			}
		})
	}
}

// TestReadLive reads this machine and checks the values are in sane ranges.
func TestReadLive(t *testing.T) {
	info, err := Read(t.TempDir())
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	if info.UptimeSeconds <= 0 {
		t.Errorf("UptimeSeconds = %v, want > 0", info.UptimeSeconds)
	}
	if info.Load1 < 0 || info.Load1 > 10000 {
		t.Errorf("Load1 = %v, out of range", info.Load1)
	}
	if info.MemPercent <= 0 || info.MemPercent > 100 {
		t.Errorf("MemPercent = %v, want in (0, 100]", info.MemPercent)
	}
	if info.DiskPercent < 0 || info.DiskPercent > 100 {
		t.Errorf("DiskPercent = %v, want in [0, 100]", info.DiskPercent)
	}
	if info.DaemonUptimeSeconds != 0 {
		t.Errorf("DaemonUptimeSeconds = %v, want 0 (the daemon fills it)", info.DaemonUptimeSeconds)
	}
}

func TestReadMissingDir(t *testing.T) {
	info, err := Read("/nonexistent/pmgcm/data")
	if err == nil {
		t.Fatal("Read of a missing dir: no error")
	}
	// The /proc metrics are still returned.
	if info.UptimeSeconds <= 0 {
		t.Errorf("UptimeSeconds = %v, want the /proc value despite the statfs error", info.UptimeSeconds)
	}
}
