// Package mailrepl owns the asynchronous replication of the mail store between
// cluster members, outside the Raft log: the HTTP endpoints a node serves to
// its peers (Handler) and the pull loops that fetch events and bodies from
// them (Replicator).
//
// # Protocol
//
// Replication is pull-only, over HTTP on the transport's mail channel (mutual
// TLS below HTTP, so URLs are "http://ip:port/..."):
//
//	GET /mail/v1/events?cursors=<JSON {origin: seq}>&limit=N&wait=DURATION
//	    -> {"events": [...], "heads": {origin: seq}}
//	GET /mail/v1/body/<id>?offset=N
//	    -> the body from byte N (headers X-Pmgcm-Mail-Size, X-Pmgcm-Mail-Sha256)
//	GET /mail/v1/bodies?ids=<id>,<id>,...            (feature level 2: Config.Bulk)
//	    -> for each ID in turn "<id> <size> <sha256>\n" and the body, or "<id> -\n"
//
// A node asks every peer for the events after its own cursors; the peer
// answers at once when it has some, else holds the request until its store
// changes or the wait runs out (long poll), so a new message reaches the other
// nodes within a round trip. Every node serves the events of every origin it
// has, and every body it holds, so replication is transitive: a message whose
// origin is dead still arrives from any node that got it. Applying events is
// idempotent and ordered per origin (mailstore.ApplyEvents), so the same event
// arriving from two peers is harmless. Bodies stream into a resumable partial
// file (mailstore.BeginBody) and are verified by SHA-256 before they count; a
// bounded pool of workers fetches several at once (pool.go), so that a node that
// lacks thousands (a join) overlaps their round trips and commits. Once every member
// serves it, a worker asks for the bodies of one events answer in one request
// (bodies.go, bulk.go), and those the peer lacks (it relayed another origin's events)
// of their origin in one more; a body of more than 1 MiB, one a broken transfer left
// partly received, and any no answer brought whole, are asked for alone.
// A node serves what its index has committed (mailstore's feed): a message it
// acknowledged a moment ago shows in a later answer, once indexed. Nothing compares
// clocks of different nodes.
//
// # Imports
//
// mailrepl imports only mailstore, internal/synchttp (which imports nothing of the
// project), the standard library and go-hclog. It must
// never import the daemon, raftnode or fsm: the daemon passes in the peers and
// the HTTP client that dials the mail channel.
package mailrepl

import "errors"

// Sentinel errors of the package.
var (
	// ErrInvalidConfig means a Config is missing a required field.
	ErrInvalidConfig = errors.New("mailrepl: invalid config")
	// ErrPeer means a peer answered a request with an unexpected status or
	// a malformed body.
	ErrPeer = errors.New("mailrepl: bad answer from peer")
	// ErrNoSource means no reachable peer holds a body this node needs.
	ErrNoSource = errors.New("mailrepl: no peer has the body")
)
