// Package daemon is pmgclusterd: it owns the node's data directory (its lock, layout and
// identity files) and the node's standing (member, promoting, removed or fenced: one
// typed state, standing.go), wires the fsm, raftnode, transport and cluster packages
// together, and serves the control socket (HTTP+JSON on a unix socket, the API of
// package api) that the pmgcm CLI talks to.
//
// The node-to-node protocol is package cluster's: daemon implements its Handler
// (service.go) and sends with its Client and Forwarder; no file here defines a
// node-to-node path or wire type.
//
// Layout of a data directory:
//
//	LOCK            flock held while a daemon runs; holds its PID
//	node.json       this node's name, address and CID
//	tls/            node.key, node.crt and, once in a cluster, ca.crt
//	raft/           wal/ (log and stable store; raft.db.pre-wal after an upgrade from
//	                1ca55cd) and snapshots/: the replicated state,
//	                the cluster CA key and join token salt among it; wiped when the node
//	                learns it was removed (forget.go)
//	peers.json      the member list this node trusts until its state has caught up
//
// Every small file is read bounded (bounded.go). What a member may ask of the master
// beyond mutual TLS is in forwarded.go, what the join channel tells a stranger in
// unauthenticated.go, the join token's expiry and rotation in jointoken.go, the back-off
// of wrong tokens in jointhrottle.go.
//
// Daemon itself keeps the lifecycle (New, Open, Close, Wait, and the open* steps of
// Open), the wiring of the parts, the node's identity file and standing (self, setSelf,
// updateSelf, standing, checkServing, rn), the handler table of the control socket
// (controlHandler) and the leader duties it registers (leaderDuties). Each other
// concern is a small type holding narrow fields, or a small interface that *Daemon
// satisfies, made once in Open: the write path (writer), joining (joiner) and admission
// (admitter), the peer cache and authorizer (peerTrust), pmgcm delete (memberOps), the
// join token (tokenKeeper), the voter policy (voterReconciler), promotion (promoter),
// sync (syncer), create (creator), certificate renewal (certRenewer), the cluster
// version (versionKeeper), the diagnostics bundle (reporter), the health checks
// (health), the operator tools (opsState), stopping without losing a write (stopDrain),
// what members may forward (forwardGuard), the wipe of a removed node (clusterWiper),
// the quarantine, its replication and the quarantine handlers (mailSystem), maintenance
// mode and SMTP intake with it (maintenance), pmgcm check (checker), backup, restore and
// the scheduled backups (backups), status and the node rows (statusReporter), and the
// status, create and configuration requests of the control socket (controlAPI).
//
// It must never import the cli package: the CLI reaches the daemon only through the socket.
package daemon
