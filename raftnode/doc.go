// Package raftnode owns this node's raft.Raft instance and its stores (a raft-wal
// write-ahead log for the log and stable store, migrated in place from the raft-boltdb
// raft.db of release 1ca55cd, see walstore.go; file snapshots), with the master's log append
// beside its replication and what keeps that safe (overlap.go): bootstrap of a standalone node; a Node
// that outlives its Raft runs, so it can be stopped, reopened, restarted as a joiner and
// force-recovered in place; the leader loop, one per leadership term, driven by Raft's
// LeaderCh, which runs the leader duties its user registers (OnLeader); the leadership
// handover of a stopping leader; proposing commands and classifying their errors (never
// appended, or outcome unknown); linearizable reads and waits for applied indexes;
// membership change primitives (voters and non-voters); the Raft statistics status shows.
//
// It knows the state machine only as the fsm package's FSM and command encoding, the
// network only as raft.StreamLayer values (Layers), and the voter policy not at all
// (package membership decides, the daemon carries out). It must never import the
// daemon, cluster, cli or transport packages. See DESIGN.md for why it is shaped so.
package raftnode
