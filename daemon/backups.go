package daemon

import (
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pmgcm/pmgcm/fsm"
	"github.com/pmgcm/pmgcm/raftnode"
)

// backups owns pmgcm backup and restore (backup.go, mailbackup.go) and the scheduled
// backups of the master (schedbackup.go).
type backups struct {
	fsm    *fsm.FSM
	logger hclog.Logger
	dir    *dataDir
	// backupDir, interval and keep are --backup-dir, --backup-interval and --backup-keep.
	backupDir string
	interval  time.Duration
	keep      int
	// state is the outcome of the scheduled backups (Daemon.tools.backup).
	state  *backupState
	gate   *opGate
	trust  *peerTrust
	writes *writer
	mail   func() *mailSystem
	// host is what backups need of the rest of the daemon.
	host backupHost
}

// backupHost is what backup and restore need of the daemon.
type backupHost interface {
	self() nodeFile
	rn() *raftnode.Node
	checkServing() error
}

func newBackups(d *Daemon) *backups {
	return &backups{
		fsm: d.fsm, logger: d.logger, dir: d.dir, backupDir: d.cfg.BackupDir, interval: d.cfg.BackupInterval, keep: d.cfg.BackupKeep,
		state: &d.tools.backup, gate: &d.gate, trust: d.trust, writes: d.writes, mail: d.mailSys, host: d,
	}
}
