package daemon

import (
	"github.com/pmgcm/pmgcm/fsm"
	"github.com/pmgcm/pmgcm/raftnode"
)

// controlAPI answers the control socket's status, create and configuration requests
// (control.go); the other requests go to the type that owns them, in the handler table
// of Daemon.controlHandler.
type controlAPI struct {
	// stat is this node's view of the cluster (status.go).
	stat    *statusReporter
	fsm     *fsm.FSM
	writes  *writer
	creator *creator
	ops     *opsState
	// host is what these handlers need of the rest of the daemon.
	host controlHost
}

// controlHost is what the control socket's handlers need of the daemon.
type controlHost interface {
	self() nodeFile
	rn() *raftnode.Node
	checkServing() error
}

func newControlAPI(d *Daemon) *controlAPI {
	return &controlAPI{fsm: d.fsm, writes: d.writes, creator: d.creator, ops: d.ops, stat: d.stat, host: d}
}
