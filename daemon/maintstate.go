package daemon

import (
	"context"

	"github.com/hashicorp/go-hclog"

	"github.com/pmgcm/pmgcm/cluster"
	"github.com/pmgcm/pmgcm/fsm"
	"github.com/pmgcm/pmgcm/raftnode"
)

// maintenance keeps this node's maintenance mode (pmgcm maintenance, maintenance.go):
// the mode's file, SMTP intake opened and closed with it, and the hand-over of
// mastership by a master in maintenance.
type maintenance struct {
	// stat is this node's view of the cluster (status.go).
	stat   *statusReporter
	cfg    *Config
	fsm    *fsm.FSM
	logger hclog.Logger
	dir    *dataDir
	// tools holds the mode (Daemon.tools).
	tools   *toolState
	ops     *opsState
	metrics *metrics
	limits  *listenerLimits
	// stop is closed when the daemon closes (Daemon.stop).
	stop   chan struct{}
	mail   func() *mailSystem
	peer   func() *cluster.Client
	policy mailPolicy
	// transferTo hands mastership to a voter (promoter.transferTo; the promoter is made
	// after maintenance).
	transferTo func(ctx context.Context, cid uint64) error
	// host is what maintenance needs of the rest of the daemon.
	host maintenanceHost
}

// maintenanceHost is what maintenance mode needs of the daemon.
type maintenanceHost interface {
	self() nodeFile
	rn() *raftnode.Node
	checkServing() error
}

func newMaintenance(d *Daemon) *maintenance {
	return &maintenance{
		cfg: &d.cfg, fsm: d.fsm, logger: d.logger, dir: d.dir, tools: &d.tools, ops: d.ops, metrics: d.metrics, limits: d.limits,
		// d.mail, not d.mailSys: openMail opens SMTP intake (setSMTP) before d.opened closes.
		stop: d.stop, mail: func() *mailSystem { return d.mail }, peer: func() *cluster.Client { return d.peer }, policy: mailPolicy{d},
		transferTo: func(ctx context.Context, cid uint64) error { return d.promoter.transferTo(ctx, cid) }, stat: d.stat, host: d,
	}
}
