package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/backup"
	"github.com/pmgcm/pmgcm/fsm"
	"github.com/pmgcm/pmgcm/internal/dirsync"
	"github.com/pmgcm/pmgcm/mailstore"
)

// Defaults of the scheduled backups (--backup-dir turns them on).
const (
	DefaultBackupInterval = 24 * time.Hour
	DefaultBackupKeep     = 7
)

// Scheduled backup files are named backupPrefix + UTC time + backupSuffix; only such
// files are ever removed from the backup directory.
const (
	backupPrefix     = "pmgcm-"
	backupSuffix     = ".backup"
	backupTimeLayout = "20060102T150405Z"
)

// backupState is the outcome of this node's scheduled backups, shown in status and the
// metrics.
type backupState struct {
	mu   sync.Mutex
	st   api.BackupStatus
	init bool
}

// backupStatus returns the state of the scheduled backups, nil when they are off. Before
// this node wrote one, the newest file in the directory stands in.
func (bk *backups) backupStatus() *api.BackupStatus {
	if bk.backupDir == "" {
		return nil
	}
	b := bk.state
	b.mu.Lock()
	init := b.init
	b.mu.Unlock()
	if !init {
		// Read the directory outside the lock, then publish what was found unless this
		// node has written a backup meanwhile.
		found := api.BackupStatus{Dir: bk.backupDir}
		if files, err := listBackups(bk.backupDir); err == nil && len(files) > 0 {
			newest := filepath.Join(bk.backupDir, files[len(files)-1])
			if fi, err := os.Stat(newest); err == nil {
				found.File, found.Size = newest, fi.Size()
				found.Last, found.LastSuccess = fi.ModTime().UTC(), fi.ModTime().UTC()
			}
		}
		b.mu.Lock()
		if !b.init {
			b.init, b.st = true, found
		}
		b.mu.Unlock()
	}
	b.mu.Lock()
	st := b.st
	b.mu.Unlock()
	return &st
}

// backupDuty runs on the master for one leadership term: every --backup-interval it
// writes a consistent backup, with mail, into --backup-dir and keeps the newest
// --backup-keep. The first one is due an interval after the newest in the directory, so
// that a change of master does not start the count over.
func (bk *backups) backupDuty(ctx context.Context) {
	if bk.backupDir == "" {
		return
	}
	for {
		last := bk.backupStatus().Last
		wait := time.Until(last.Add(bk.interval))
		if last.IsZero() || wait < 0 {
			wait = 0
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		if ctx.Err() != nil || !bk.host.rn().IsLeader() {
			return
		}
		bk.scheduledBackup(ctx)
	}
}

// scheduledBackup writes one backup and records the outcome.
func (bk *backups) scheduledBackup(ctx context.Context) {
	start := time.Now()
	path, size, err := bk.backupToDir(ctx)
	b := bk.state
	bk.backupStatus() // initialized
	b.mu.Lock()
	b.st.Last = start.UTC()
	if err != nil {
		b.st.Error = err.Error()
	} else {
		b.st.Error, b.st.File, b.st.Size, b.st.LastSuccess = "", path, size, start.UTC()
	}
	b.mu.Unlock()
	if err != nil {
		bk.logger.Error("scheduled backup failed; the older backups are kept", "dir", bk.backupDir, "error", err)
		return
	}
	bk.logger.Info("scheduled backup written", "file", path, "bytes", size, "duration", time.Since(start).Round(time.Millisecond))
	if err := pruneBackups(bk.backupDir, bk.keep); err != nil {
		bk.logger.Warn("cannot remove old backups", "dir", bk.backupDir, "error", err)
	}
}

// backupToDir writes a backup with mail to a temporary file in the backup directory,
// fsyncs it, checks it whole (as a restore would), renames it into place and fsyncs
// the directory: a crash or a failure never leaves a file under a backup's name that is
// not a complete backup.
func (bk *backups) backupToDir(ctx context.Context) (string, int64, error) {
	dir := bk.backupDir
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", 0, fmt.Errorf("create --backup-dir %s: %w", dir, err)
	}
	if bk.trust.knownCluster() != "" {
		if err := bk.writes.linearizableRead(ctx); err != nil {
			return "", 0, err
		}
	}
	name := backupPrefix + time.Now().UTC().Format(backupTimeLayout) + backupSuffix
	final := filepath.Join(dir, name)
	tmp, err := os.CreateTemp(dir, "."+name+".tmp*")
	if err != nil {
		return "", 0, fmt.Errorf("write a backup in %s: %w", dir, err)
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	defer tmp.Close()
	if err := tmp.Chmod(0o600); err != nil {
		return "", 0, err
	}
	if _, err := bk.writeBackup(true, func(int64) io.Writer { return tmp }); err != nil {
		return "", 0, fmt.Errorf("write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		return "", 0, fmt.Errorf("fsync %s: %w", tmp.Name(), err)
	}
	if _, err := tmp.Seek(0, 0); err != nil {
		return "", 0, err
	}
	if _, err := backup.Verify(tmp); err != nil {
		return "", 0, fmt.Errorf("the backup written to %s does not verify: %w", tmp.Name(), err)
	}
	fi, err := tmp.Stat()
	if err != nil {
		return "", 0, err
	}
	if err := tmp.Close(); err != nil {
		return "", 0, err
	}
	if err := os.Rename(tmp.Name(), final); err != nil {
		return "", 0, err
	}
	if err := dirsync.Sync(dir); err != nil {
		return "", 0, fmt.Errorf("fsync %s: %w", dir, err)
	}
	return final, fi.Size(), nil
}

// listBackups returns the names of the scheduled backups in dir, oldest first.
func listBackups(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		n := e.Name()
		if e.Type().IsRegular() && strings.HasPrefix(n, backupPrefix) && strings.HasSuffix(n, backupSuffix) {
			if _, err := time.Parse(backupTimeLayout, strings.TrimSuffix(strings.TrimPrefix(n, backupPrefix), backupSuffix)); err == nil {
				out = append(out, n)
			}
		}
	}
	slices.Sort(out) // the UTC time in the name sorts as the name
	return out, nil
}

// staleTempAge is the age past which a temporary backup file is one a crash left: no
// backup is written for that long.
const staleTempAge = 24 * time.Hour

// pruneBackups removes all but the newest keep scheduled backups in dir, and the
// temporary files of backups a crash cut short.
func pruneBackups(dir string, keep int) error {
	files, err := listBackups(dir)
	if err != nil {
		return err
	}
	var errs []error
	if ents, err := os.ReadDir(dir); err == nil {
		for _, e := range ents {
			n := e.Name()
			if !e.Type().IsRegular() || !strings.HasPrefix(n, "."+backupPrefix) || !strings.Contains(n, backupSuffix+".tmp") {
				continue
			}
			if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) > staleTempAge {
				if err := os.Remove(filepath.Join(dir, n)); err != nil && !errors.Is(err, os.ErrNotExist) {
					errs = append(errs, err)
				}
			}
		}
	}
	for len(files) > keep {
		if err := os.Remove(filepath.Join(dir, files[0])); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
		files = files[1:]
	}
	if len(errs) == 0 {
		return dirsync.Sync(dir)
	}
	return errors.Join(errs...)
}

// backupWarnings are the status warnings about the nodes' scheduled backups.
func backupWarnings(rows []api.Node) []string {
	var out []string
	for _, r := range rows {
		if r.Backup != nil && r.Backup.Error != "" {
			out = append(out, fmt.Sprintf("the last scheduled backup on %s (cid %d) failed at %s: %s; the older backups are kept",
				r.Name, r.CID, r.Backup.Last.Format(time.RFC3339), r.Backup.Error))
		}
	}
	return out
}

// backupCollectors are the metrics of the scheduled backups, registered only when they
// are on (a node without them would read as one whose backups are old).
func backupCollectors(d *Daemon) []prometheus.Collector {
	if d.cfg.BackupDir == "" {
		return nil
	}
	return []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "pmgcm_backup_last_success_timestamp_seconds",
			Help: "Unix time of the last good scheduled backup in --backup-dir on this node (0: none).",
		}, func() float64 {
			if t := d.backups.backupStatus().LastSuccess; !t.IsZero() {
				return float64(t.UnixNano()) / 1e9
			}
			return 0
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "pmgcm_backup_last_failed",
			Help: "1 when the last scheduled backup attempted on this node failed, else 0.",
		}, func() float64 {
			if d.backups.backupStatus().Error != "" {
				return 1
			}
			return 0
		}),
	}
}

// validateBackups checks the scheduled backup settings (Config.Validate).
func (c Config) validateBackups() error {
	if c.BackupDir == "" {
		return nil
	}
	if !filepath.IsAbs(c.BackupDir) {
		return fmt.Errorf("--backup-dir %q must be an absolute path", c.BackupDir)
	}
	if c.BackupInterval < time.Second {
		return fmt.Errorf("--backup-interval %s is too short: give at least 1s (e.g. 24h)", c.BackupInterval)
	}
	if c.BackupKeep < 1 {
		return fmt.Errorf("--backup-keep %d: keep at least 1 backup", c.BackupKeep)
	}
	return nil
}

// backupEstimate is about the size of a backup of entries and messages (values are
// base64 in it, bodies raw), for the progress of `pmgcm backup`.
func backupEstimate(entries *fsm.View, mail []mailstore.Meta) int64 {
	n := int64(256)
	for i := range entries.Len() {
		n += int64(len(entries.Key(i))) + entries.Size(i)*4/3 + 64
	}
	for _, m := range mail {
		n += m.Size + 320 + int64(len(m.Subject)+len(m.From))
		for _, to := range m.To {
			n += int64(len(to)) + 3
		}
	}
	return n
}
