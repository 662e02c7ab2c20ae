package daemon

import (
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pmgcm/pmgcm/cluster"
	"github.com/pmgcm/pmgcm/fsm"
	"github.com/pmgcm/pmgcm/raftnode"
	"github.com/pmgcm/pmgcm/transport"
)

// statusReporter is this node's view of the cluster (status.go): pmgcm status, each
// node's row (its own read live, the others asked for theirs) and the summary of the
// voters that errors without a master carry.
type statusReporter struct {
	cfg     *Config
	logger  hclog.Logger
	started time.Time
	fsm     *fsm.FSM
	mux     *transport.Mux
	// peers is the membership this node trusts at the handshake (Daemon.peers).
	peers    *atomic.Pointer[peerCache]
	trust    *peerTrust
	members  *memberView
	ops      *opsState
	honesty  *honesty
	diskW    *diskWatch
	versions *versionKeeper
	backups  *backups
	peer     func() *cluster.Client
	mail     func() *mailSystem
	// inMaintenance reports maintenance mode (maintenance.maintenanceOn; made after).
	inMaintenance func() bool
	// host is what status needs of the rest of the daemon.
	host statusHost
}

// statusHost is what status needs of the daemon.
type statusHost interface {
	self() nodeFile
	rn() *raftnode.Node
}

func newStatusReporter(d *Daemon) *statusReporter {
	return &statusReporter{
		cfg: &d.cfg, logger: d.logger, started: d.started, fsm: d.fsm, mux: d.mux, peers: &d.peers, trust: d.trust,
		members: d.members, ops: d.ops, honesty: d.honesty, diskW: d.diskW, versions: d.versions, backups: d.backups,
		peer: func() *cluster.Client { return d.peer }, mail: d.mailSys,
		inMaintenance: func() bool { return d.maint.maintenanceOn() }, host: d,
	}
}
