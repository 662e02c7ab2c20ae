// Package raftnode owns this node's raft.Raft instance: its stores (a raft-wal write-ahead
// log for the log and stable store, migrated in place from the raft-boltdb raft.db of
// release 1ca55cd, see walstore.go; file snapshots), bootstrap of a standalone node, proposing commands,
// waiting for applied indexes, membership changes (voters and non-voters) and the Raft
// statistics that status shows.
//
// It knows the state machine only as a raft.FSM plus the fsm package's command encoding,
// and the network only as a raft.StreamLayer. It must never import the cli, daemon or
// transport packages: the daemon wires those together.
package raftnode
