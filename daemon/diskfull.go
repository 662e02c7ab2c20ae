package daemon

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/pmgcm/pmgcm/api"
)

// A full disk under the mail store: SMTP intake answers 451 and replicated bodies cannot
// be stored, which is safe, but an operator must see why the node is not in sync, and
// the node must catch up as soon as space is back rather than at the replicator's next
// backoff (up to 30 s for missing bodies). The watcher below reads the free space of the
// mail store's file system every diskCheckEvery; status and the metrics show what it
// found, and the moment space returns it kicks the replicator.

const (
	// diskFullBelow is the free space under which the mail store's disk counts as full:
	// no message body of a usual size fits reliably.
	diskFullBelow = 1 << 20
	// diskCheckEvery is how often the free space is read (one statfs).
	diskCheckEvery = time.Second
)

// diskState is the last reading of the watcher.
type diskState struct {
	known atomic.Bool
	full  atomic.Bool
	free  atomic.Uint64 // bytes available to the daemon
}

// diskWatch owns the reading of the mail store's free space: it reads it every
// diskCheckEvery into state, kicks the mail replicator when space comes back, and says
// what it found in this node's status row.
type diskWatch struct {
	// dir is the mail store's directory, whose file system is watched.
	dir    string
	logger hclog.Logger
	// state is the last reading (Daemon.disk, which the metrics read too).
	state *diskState
	// kick wakes the mail replicator (peer loops and the missing-body sweeper).
	kick func()
	// stop closes when the daemon stops; bg holds the daemon's background tasks.
	stop <-chan struct{}
	bg   *sync.WaitGroup
}

// newDiskWatch returns the disk watch of d, whose data directory is open.
func newDiskWatch(d *Daemon) *diskWatch {
	return &diskWatch{
		dir: d.dir.file("mail"), logger: d.logger, state: &d.disk, stop: d.stop, bg: &d.bg,
		kick: func() {
			if r := d.mail.replicator(); r != nil {
				r.Kick()
			}
		},
	}
}

// read reads the free space of the mail store's file system once and records it, and
// reports whether the disk went from full to not full.
func (w *diskWatch) read() (recovered bool) {
	var st unix.Statfs_t
	if err := unix.Statfs(w.dir, &st); err != nil {
		return false
	}
	free := st.Bavail * uint64(st.Bsize)
	full := free < diskFullBelow
	w.state.free.Store(free)
	w.state.known.Store(true)
	was := w.state.full.Swap(full)
	switch {
	case full && !was:
		w.logger.Error("disk full: no space left for the mail store; SMTP intake answers 451 and replicated mail waits",
			"dir", w.dir, "free-bytes", free)
	case !full && was:
		w.logger.Info("disk space is back for the mail store; catching up now", "dir", w.dir, "free-bytes", free)
		return true
	}
	return false
}

// run reads the disk every diskCheckEvery until the daemon stops, and kicks the mail
// replicator when space comes back. The caller has added it to bg.
func (w *diskWatch) run() {
	defer w.bg.Done()
	t := time.NewTicker(diskCheckEvery)
	defer t.Stop()
	for {
		if w.read() {
			w.kick()
		}
		select {
		case <-w.stop:
			return
		case <-t.C:
		}
	}
}

// fullReason is the status reason of a full mail disk, "" when it is not full.
func (w *diskWatch) fullReason() string {
	if !w.state.full.Load() {
		return ""
	}
	return fmt.Sprintf("disk full: no space left for the mail store (%d KiB free in %s); free space there, the node catches up within seconds",
		w.state.free.Load()>>10, w.dir)
}

// markFull puts this node's row in state S with the disk-full reason.
func (w *diskWatch) markFull(n *api.Node) {
	if why := w.fullReason(); why != "" && n.State != api.StateDown {
		n.State = api.StateSyncing
		if n.Reason != "" {
			why += "; " + n.Reason
		}
		n.Reason = why
	}
}

// diskCollector exposes the watcher's reading.
type diskCollector struct{ d *Daemon }

var (
	descDiskFull = prometheus.NewDesc("pmgcm_mail_disk_full",
		"1 when the mail store's file system has less than 1 MiB free (SMTP answers 451, replicated mail waits), else 0.", nil, nil)
	descDiskFree = prometheus.NewDesc("pmgcm_mail_disk_free_bytes",
		"Bytes available to the daemon on the mail store's file system, read every second.", nil, nil)
)

func (c diskCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descDiskFull
	ch <- descDiskFree
}

func (c diskCollector) Collect(ch chan<- prometheus.Metric) {
	if !c.d.disk.known.Load() {
		return
	}
	full := 0.0
	if c.d.disk.full.Load() {
		full = 1
	}
	ch <- prometheus.MustNewConstMetric(descDiskFull, prometheus.GaugeValue, full)
	ch <- prometheus.MustNewConstMetric(descDiskFree, prometheus.GaugeValue, float64(c.d.disk.free.Load()))
}
