package daemon

import (
	"fmt"
	"math"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pmgcm/pmgcm/api"
)

// maxClockSkew is the clock difference to the master beyond which status warns: mail
// retention and received times depend on the nodes' clocks.
const maxClockSkew = 2 * time.Second

// opsState holds the operator tools of a node: the disk guard, the clock it reports, the
// maintenance hook, the log ring for diagnostics.
type opsState struct {
	disk *diskGuard
	// clockOffset shifts the reported clock (Config.TestClockOffset; tests only).
	clockOffset time.Duration
	// maintenance, if set, says whether the node is in maintenance and why (see
	// setMaintenanceHook).
	maintenance atomic.Pointer[func() (bool, string)]
}

func newOpsState(cfg Config, logger hclog.Logger) *opsState {
	o := &opsState{disk: newDiskGuard(cfg.DataDir, cfg.MinFreeDisk, logger.Named("diskguard")),
		clockOffset: cfg.TestClockOffset}
	if o.clockOffset != 0 {
		logger.Warn("the clock this node reports is shifted for a test (--test-clock-offset): never use it in production", "offset", o.clockOffset)
	}
	return o
}

// startOps reads the disk once (so that SMTP starts with the guard's state) and runs
// the guard in the background until the daemon closes.
func (d *Daemon) startOps() {
	d.ops.disk.check()
	d.bg.Add(1)
	go func() {
		defer d.bg.Done()
		d.ops.disk.run(d.stop)
	}()
}

// setMaintenanceHook makes fn the source of the node's maintenance state: while fn says
// true, /health/mail and /health/cluster answer 503 with its reason. It is safe to call
// at any time.
func (d *Daemon) setMaintenanceHook(fn func() (on bool, reason string)) {
	d.ops.maintenance.Store(&fn)
}

// inMaintenance asks the maintenance hook, if any.
func (d *Daemon) inMaintenance() (bool, string) {
	if fn := d.ops.maintenance.Load(); fn != nil {
		return (*fn)()
	}
	return false, ""
}

// clockNow is the wall clock this node reports.
func (d *Daemon) clockNow() time.Time { return time.Now().Add(d.ops.clockOffset).UTC() }

// fillOps adds the operator fields to this node's own status row.
func (d *Daemon) fillOps(n *api.Node) {
	n.DiskGuard = d.diskGuardStatus()
	n.Clock = d.clockNow()
}

// clockOffset estimates how far a remote clock is ahead of ours: it read remote while
// our request was under way, which took rtt from sent, so its reading is taken to be of
// the middle of the round trip. The error is at most rtt/2.
func clockOffset(remote, sent time.Time, rtt time.Duration) time.Duration {
	return remote.Sub(sent.Add(rtt / 2))
}

// noteClock records in row n (just answered) its clock's offset from this node's.
func noteClock(n *api.Node, sent time.Time, rtt time.Duration) {
	if n.Clock.IsZero() {
		return // a node of a version that does not report its clock
	}
	off := clockOffset(n.Clock, sent, rtt).Seconds()
	n.ClockOffsetSeconds = &off
}

// noteLocalClock records the offset of this node's own reported clock (0 but in tests).
func (d *Daemon) noteLocalClock(n *api.Node) {
	off := d.ops.clockOffset.Seconds()
	n.ClockOffsetSeconds = &off
}

// opsWarnings rebases the rows' clock offsets onto the master's clock and returns the
// warnings of the operator tools: clock skew beyond maxClockSkew, disk guards tripped.
func opsWarnings(rows []api.Node, leaderCID uint64) []string {
	var warns []string
	var ref *float64
	var masterName string
	for i := range rows {
		r := &rows[i]
		if r.State == api.StateDown {
			r.ClockOffsetSeconds = nil
		}
		if r.CID == leaderCID && leaderCID != 0 {
			ref, masterName = r.ClockOffsetSeconds, r.Name
		}
	}
	for i := range rows {
		r := &rows[i]
		if ref == nil || r.ClockOffsetSeconds == nil {
			r.ClockOffsetSeconds = nil // no comparison with the master's clock possible
		} else {
			off := math.Round((*r.ClockOffsetSeconds-*ref)*1000) / 1000
			r.ClockOffsetSeconds = &off
			if math.Abs(off) > maxClockSkew.Seconds() {
				warns = append(warns, fmt.Sprintf("%s: clock differs from the master's (%s) by %+.1fs, more than %s: mail retention and received times depend on it; sync the clocks (NTP, e.g. chrony) on both",
					r.Name, masterName, off, maxClockSkew))
			}
		}
		if g := r.DiskGuard; g != nil && g.Active {
			warns = append(warns, fmt.Sprintf("%s: disk guard: %.1f%% free below %s (%s free): SMTP answers 452 and configuration writes through it are refused; free space on its data directory",
				r.Name, g.FreePercent, g.MinFree, formatBytes(g.FreeBytes)))
		}
	}
	return warns
}

// opsCollector exposes the disk guard to Prometheus.
type opsCollector struct{ d *Daemon }

var (
	descDiskGuardActive = prometheus.NewDesc("pmgcm_disk_guard_active",
		"1 while free space on the data directory's filesystem is below --min-free-disk: SMTP answers 452 and configuration writes through this node are refused.", nil, nil)
	descGuardFree = prometheus.NewDesc("pmgcm_disk_free_bytes",
		"Bytes free for the daemon on the data directory's filesystem, read every second.", nil, nil)
	descDiskTotal = prometheus.NewDesc("pmgcm_disk_total_bytes",
		"Size of the data directory's filesystem in bytes.", nil, nil)
	descDiskThreshold = prometheus.NewDesc("pmgcm_disk_guard_threshold_bytes",
		"Free bytes below which the disk guard trips (--min-free-disk).", nil, nil)
)

// Describe sends the descriptors of the operator metrics.
func (c opsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descDiskGuardActive, descGuardFree, descDiskTotal, descDiskThreshold} {
		ch <- d
	}
}

// Collect reads the disk guard's last reading.
func (c opsCollector) Collect(ch chan<- prometheus.Metric) {
	if c.d.ops == nil {
		return
	}
	s := c.d.ops.disk.state.Load()
	if s == nil {
		return
	}
	active := 0.0
	if s.active() {
		active = 1
	}
	ch <- prometheus.MustNewConstMetric(descDiskGuardActive, prometheus.GaugeValue, active)
	ch <- prometheus.MustNewConstMetric(descGuardFree, prometheus.GaugeValue, float64(s.Free))
	ch <- prometheus.MustNewConstMetric(descDiskTotal, prometheus.GaugeValue, float64(s.Total))
	ch <- prometheus.MustNewConstMetric(descDiskThreshold, prometheus.GaugeValue, float64(s.Threshold))
}
