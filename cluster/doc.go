// Package cluster owns the node-to-node protocol of pmgclusterd: the paths of the
// cluster RPC channel (members only, mutual TLS) and of the join channel (no client
// certificate needed; the caller pins the server's fingerprint), the JSON wire types,
// the protocol version range, a typed Client for every request, a Service that serves
// them by dispatching to a Handler the daemon implements, and the forwarding of
// master-only requests to the master (Forwarder) with its retry and unknown-outcome
// rules.
//
// It knows nothing of how a node keeps its state: it sees the local Raft node only
// through the small Leadership interface and the daemon only through Handler. It must
// never import daemon (nor cli); transport and raftnode never import it.
//
// The wire formats are those of the first release (1ca55cd, protocol 2): same paths,
// same JSON. See DESIGN.md for why the package is cut this way.
package cluster
