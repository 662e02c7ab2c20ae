package daemon

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/pmgcm/pmgcm/api"
)

// DefaultMinFreeDisk is the default --min-free-disk: 5% of the data directory's filesystem.
var DefaultMinFreeDisk = DiskSize{Percent: 5}

// diskCheckInterval is how often the disk guard reads the free space (one statfs(2)).
const diskCheckInterval = time.Second

// DiskSize is the --min-free-disk threshold: a size in bytes, or a percentage of the
// filesystem that holds the data directory. The zero value turns the guard off.
type DiskSize struct {
	// Bytes is the threshold in bytes, used when Percent is 0.
	Bytes uint64
	// Percent is the threshold in percent of the filesystem's size, 0 to 100.
	Percent float64
}

// sizeUnits are the suffixes ParseDiskSize takes. A bare letter and the IEC names are
// powers of 1024 (as df(1) and du(1) print them); the SI names with B are powers of 1000.
var sizeUnits = map[string]float64{
	"": 1, "b": 1,
	"k": 1 << 10, "kib": 1 << 10, "kb": 1e3,
	"m": 1 << 20, "mib": 1 << 20, "mb": 1e6,
	"g": 1 << 30, "gib": 1 << 30, "gb": 1e9,
	"t": 1 << 40, "tib": 1 << 40, "tb": 1e12,
}

// ParseDiskSize reads a --min-free-disk value: a percentage ("5%", "2.5%"), or a size
// with an optional unit ("500MiB", "2G", "1GB", "1048576"); "0" turns the guard off.
func ParseDiskSize(s string) (DiskSize, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return DiskSize{}, fmt.Errorf("empty size: give a percentage like 5%% or a size like 500MiB")
	}
	if p, ok := strings.CutSuffix(t, "%"); ok {
		v, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
		if err != nil || math.IsNaN(v) || v < 0 || v >= 100 {
			return DiskSize{}, fmt.Errorf("%q: a percentage must be a number from 0 to below 100, like 5%%", s)
		}
		return DiskSize{Percent: v}, nil
	}
	i := strings.IndexFunc(t, func(r rune) bool { return !(r >= '0' && r <= '9' || r == '.') })
	num, unit := t, ""
	if i >= 0 {
		num, unit = t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	}
	mult, ok := sizeUnits[unit]
	if !ok {
		return DiskSize{}, fmt.Errorf("%q: unknown unit %q: use B, K, KiB, KB, M, MiB, MB, G, GiB, GB, T, TiB, TB or a percentage", s, t[i:])
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || v < 0 || math.IsInf(v*mult, 0) || v*mult > math.MaxInt64 {
		return DiskSize{}, fmt.Errorf("%q: not a size: give a percentage like 5%% or a size like 500MiB", s)
	}
	return DiskSize{Bytes: uint64(v * mult)}, nil
}

// String returns the size as ParseDiskSize reads it.
func (s DiskSize) String() string {
	switch {
	case s.Percent > 0:
		return strconv.FormatFloat(s.Percent, 'f', -1, 64) + "%"
	case s.Bytes == 0:
		return "0"
	}
	return formatBytes(s.Bytes)
}

// Set implements pflag.Value.
func (s *DiskSize) Set(v string) error {
	d, err := ParseDiskSize(v)
	if err != nil {
		return err
	}
	*s = d
	return nil
}

// Type implements pflag.Value.
func (s *DiskSize) Type() string { return "size" }

// validate checks a DiskSize built in code rather than parsed.
func (s DiskSize) validate() error {
	if math.IsNaN(s.Percent) || s.Percent < 0 || s.Percent >= 100 {
		return fmt.Errorf("--min-free-disk %v%%: a percentage must be from 0 to below 100", s.Percent)
	}
	return nil
}

// threshold is the free space in bytes below which the guard trips, on a filesystem of
// total bytes.
func (s DiskSize) threshold(total uint64) uint64 {
	if s.Percent > 0 {
		return uint64(float64(total) * s.Percent / 100)
	}
	return s.Bytes
}

// formatBytes prints n in the largest binary unit that keeps it at 1 or more.
func formatBytes(n uint64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	v, u := float64(n), 0
	for v >= 1024 && u < len(units)-1 {
		v /= 1024
		u++
	}
	if u == 0 {
		return fmt.Sprintf("%dB", n)
	}
	return strconv.FormatFloat(math.Round(v*10)/10, 'f', -1, 64) + units[u]
}

// guardReading is one reading of the data directory's filesystem.
type guardReading struct {
	At        time.Time
	Free      uint64 // bytes available to the daemon (statfs f_bavail)
	Total     uint64
	Threshold uint64
	ReadOnly  bool
	// Err is set when statfs failed; the other fields are then those of the last good reading.
	Err error
}

// active reports whether the guard holds intake and writes back.
func (s *guardReading) active() bool { return s != nil && s.Err == nil && s.Free < s.Threshold }

// freePercent is the free space in percent of the filesystem.
func (s *guardReading) freePercent() float64 {
	if s == nil || s.Total == 0 {
		return 0
	}
	return float64(s.Free) * 100 / float64(s.Total)
}

// diskGuard reads the free space of the data directory's filesystem every second and
// trips below --min-free-disk: SMTP then answers 452, configuration writes through this
// node are refused, status and the metrics warn. It clears by itself once there is room.
type diskGuard struct {
	dir    string
	min    DiskSize
	logger hclog.Logger
	state  atomic.Pointer[guardReading]
}

func newDiskGuard(dir string, min DiskSize, logger hclog.Logger) *diskGuard {
	return &diskGuard{dir: dir, min: min, logger: logger}
}

// check reads the filesystem once and logs when the guard trips or clears.
func (g *diskGuard) check() {
	prev := g.state.Load()
	var st unix.Statfs_t
	next := &guardReading{At: time.Now()}
	if err := unix.Statfs(g.dir, &st); err != nil {
		if prev != nil {
			*next = *prev
		}
		next.Err = fmt.Errorf("statfs %s: %w", g.dir, err)
		if prev == nil || prev.Err == nil {
			g.logger.Warn("disk guard cannot read the free space", "error", next.Err)
		}
		g.state.Store(next)
		return
	}
	bs := uint64(st.Bsize)
	next.Free, next.Total = st.Bavail*bs, st.Blocks*bs
	next.ReadOnly = st.Flags&unix.ST_RDONLY != 0
	next.Threshold = g.min.threshold(next.Total)
	g.state.Store(next)
	switch was, is := prev.active(), next.active(); {
	case is && !was:
		g.logger.Error("disk guard: free space below --min-free-disk: SMTP answers 452 and configuration writes through this node are refused until there is room",
			"data-dir", g.dir, "free", formatBytes(next.Free), "free-percent", fmt.Sprintf("%.1f", next.freePercent()), "min-free-disk", g.min.String())
	case was && !is:
		g.logger.Info("disk guard: free space is above --min-free-disk again; mail intake and writes resume",
			"data-dir", g.dir, "free", formatBytes(next.Free), "free-percent", fmt.Sprintf("%.1f", next.freePercent()))
	}
}

// run checks the free space every diskCheckInterval until stop is closed.
func (g *diskGuard) run(stop <-chan struct{}) {
	t := time.NewTicker(diskCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			g.check()
		}
	}
}

// active reports whether the guard trips now.
func (g *diskGuard) active() bool { return g != nil && g.state.Load().active() }

// describe says how far below the threshold the disk is, e.g. "3.1% free (2MiB of
// 64MiB) below 5%".
func (g *diskGuard) describe(s *guardReading) string {
	return fmt.Sprintf("%.1f%% free (%s of %s) below %s", s.freePercent(), formatBytes(s.Free), formatBytes(s.Total), g.min)
}

// diskGuardRefusal returns the answer (api.CodeDiskFull, HTTP 507) that refuses a
// configuration write through this node while its disk guard trips, nil otherwise.
func (d *Daemon) diskGuardRefusal() *api.Error {
	g := d.ops.disk
	s := g.state.Load()
	if !s.active() {
		return nil
	}
	me := d.self()
	return &api.Error{
		Code: api.CodeDiskFull,
		Message: fmt.Sprintf("%s: disk guard: %s on the filesystem of %s; configuration writes through this node are refused",
			nodeLabel(me.Name, me.CID), g.describe(s), d.cfg.DataDir),
		Hint: fmt.Sprintf("free space on %s (old logs, backups, other files) or grow the filesystem; writes through it resume by themselves within seconds. Meanwhile run the write on another node", me.Name),
	}
}

// nodeLabel names a node in messages: "node2 (cid 2)".
func nodeLabel(name string, cid uint64) string { return fmt.Sprintf("%s (cid %d)", name, cid) }

// diskGuardStatus is the guard's reading for the status row.
func (d *Daemon) diskGuardStatus() *api.DiskGuard {
	g := d.ops.disk
	s := g.state.Load()
	if s == nil {
		return nil
	}
	out := &api.DiskGuard{Active: s.active(), FreeBytes: s.Free, TotalBytes: s.Total,
		FreePercent: math.Round(s.freePercent()*10) / 10, MinFree: g.min.String(), ThresholdBytes: s.Threshold}
	if s.Err != nil {
		out.Error = s.Err.Error()
	}
	return out
}
