// Package daemon is pmgclusterd: it owns the node's data directory (its lock, layout and
// identity files), wires the fsm, raftnode and transport packages together, and serves
// the control socket (HTTP+JSON on a unix socket, the API of package api) that the pmgcm
// CLI talks to.
//
// Layout of a data directory:
//
//	LOCK            flock held while a daemon runs; holds its PID
//	node.json       this node's name, address and CID
//	tls/            node.key, node.crt and, once in a cluster, ca.crt
//	raft/           wal/ (log and stable store), snapshots/; raft.db.pre-wal after an upgrade from 1ca55cd
//
// It must never import the cli package: the CLI reaches the daemon only through the socket.
package daemon
