package raftnode

import (
	"fmt"

	"github.com/hashicorp/raft"

	"github.com/pmgcm/pmgcm/fsm"
)

// recoverOffline rewrites the Raft state in cfg.Dir so that this node (cfg.LocalID at
// cfg.Address) is the single voter of its configuration: Raft's RecoverCluster, for a
// cluster that lost its quorum for good. It runs offline: no Node may have cfg.Dir open.
// Every entry in the local log is kept, committed or not, as RecoverCluster does.
// ForceRecover runs it between two runs of Raft; the next run elects itself.
func recoverOffline(cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	store, err := openLogStore(cfg.Dir, cfg.OpenTimeout, cfg.raftConfig().Logger)
	if err != nil {
		return err
	}
	defer store.Close()
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.Dir, cfg.SnapshotRetain, cfg.raftConfig().Logger.Named("snapshot"))
	if err != nil {
		return fmt.Errorf("open snapshot store in %s: %w", cfg.Dir, err)
	}
	// The transport only encodes the configuration into the snapshot's metadata.
	_, trans := raft.NewInmemTransport(cfg.Address)
	defer trans.Close()
	conf := cfg.singleVoter()
	// The state machine here is scratch: the node's own is rebuilt from the snapshot that
	// RecoverCluster writes when the next Node opens.
	if err := raft.RecoverCluster(cfg.raftConfig(), fsm.New(), store, store, snaps, trans, conf); err != nil {
		return fmt.Errorf("recover raft configuration: %w", err)
	}
	return nil
}
