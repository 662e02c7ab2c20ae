package daemon

import (
	"os"

	"github.com/hashicorp/go-hclog"

	"github.com/pmgcm/pmgcm/fsm"
	"github.com/pmgcm/pmgcm/internal/dirsync"
)

// clusterWiper owns wiping a removed node's copy of the cluster's secrets (forget).
type clusterWiper struct {
	fsm    *fsm.FSM
	logger hclog.Logger
	dir    *dataDir
	// gate admits one identity-changing operation at a time (Daemon.gate).
	gate *opGate
	// standing is where this node stands now (Daemon.standing).
	standing func() standing
}

// newClusterWiper returns the wiper of d, whose data directory and fsm are made.
func newClusterWiper(d *Daemon) *clusterWiper {
	return &clusterWiper{fsm: d.fsm, logger: d.logger, dir: d.dir, gate: &d.gate, standing: d.standing}
}

// forget wipes the cluster's secrets from a node that was removed from its
// cluster, once Raft is stopped: the cluster CA key and the join token salt (from which,
// with the key, the token derives) are in the replicated state, so in the Raft log
// (raft/raft.db: the CreateCluster and SetJoinToken commands) and in its snapshots
// (raft/snapshots/), and in the state machine in memory. All three go: the raft
// directory is removed and the state machine reset. A removed node serves nothing of the
// cluster and never takes part in Raft again until it joins anew, which replaces its
// Raft state anyway (becomeMember), so nothing it could still use is lost.
//
// What stays: node.json (name, address, CID, and the cluster that removed it), the
// node's own key and certificate and the CA certificate (tls/: the certificate is
// refused by every member from the removal on; neither is a cluster secret),
// peers.json (the member list as last known: names, addresses, fingerprints), the mail
// intake settings cache (mail-policy.json) and the node's mail store.
//
// It runs in the operation gate, so that a join begun meanwhile (which replaces the
// Raft state itself) is not undone; it does nothing once the node stands otherwise.
func (w *clusterWiper) forget() {
	leave, err := w.gate.enter("wiping a removed node's copy of the cluster state")
	if err != nil {
		return // a join is under way: it replaces the Raft state
	}
	defer leave()
	if w.standing().kind != standRemoved {
		return
	}
	dir := w.dir.file("raft")
	if _, err := os.Stat(dir); os.IsNotExist(err) {
		return
	}
	if err := os.RemoveAll(dir); err != nil {
		w.logger.Error("this node was removed from its cluster, but its copy of the cluster's state (with the CA key) could not be wiped: remove it by hand while pmgclusterd is stopped",
			"dir", dir, "error", err)
		return
	}
	if err := dirsync.Sync(w.dir.path); err != nil {
		w.logger.Warn("syncing the data directory after wiping the cluster's state", "error", err)
	}
	w.fsm.Reset()
	w.logger.Warn("this node was removed from its cluster: its copy of the cluster's state (Raft log and snapshots, with the CA key and join token salt) was wiped; its own mail, key and node file are kept",
		"dir", dir)
}
