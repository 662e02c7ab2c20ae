// Package mailstore owns a node's durable mail store: the message bodies (one
// file each) and a bbolt index of their metadata, their quarantine state, and
// the per-origin event log that replication ships between nodes.
//
// # Layout
//
// Under the store's directory:
//
//	index.db              bbolt: metadata, event log, cursors, floors, pending states, stats
//	journal/<n>.seg       the intake journal: accepted messages not yet checkpointed (intake.go)
//	bodies/xx/<id>        message bodies, sharded by the first byte of SHA-256(<id>)
//	bodies/xx/<id>.part   a body being received from a peer (resumable)
//	tmp/                  SMTP intake of a body too large for memory (inline.go; removed at
//	                      Open: never acknowledged), and the spooled names of such bodies
//	                      whose final name is not synced yet (spool.go: recorded in the
//	                      index, linked back at Open)
//	corrupt/<id>          a body that failed verification, moved aside for forensics
//
// Beside it, during a restore from a backup: <dir>.restore, the staging store a restore
// fills, and <dir>.old, the replaced store while the two are swapped (restore.go).
//
// # Identity, events and merge
//
// A message ID is "<originCID>-<seq>": origin is the CID of the node that
// received the message by SMTP, seq the origin's event sequence number of the
// message's "new" event. Every change is an Event numbered contiguously from 1
// per origin; a node keeps the events of every origin it knows so it can serve
// them to others (transitive replication). Cursors (Heads) map origin -> the
// highest sequence number applied.
//
// States are ordered quarantined < released < deleted; applying a state event
// sets max(current, event state), which is commutative and idempotent, so nodes
// converge whatever order events of different origins arrive in. Nothing here
// compares the clocks of different nodes: the only times are stamped by the
// origin (Meta.Received, Event.At) and only compared with a local cut-off by
// Purge, which every node applies by the same rule.
//
// A deleted message's body is removed at once on every node; its metadata stays
// as a tombstone. A purged message (retention) keeps a tombstone too, so that
// late events neither resurrect it nor make it be fetched again.
//
// # Compaction
//
// Compact (after Purge) drops each origin's oldest events while they concern
// purged messages only, with their tombstones, and keeps a floor per origin. A
// peer asking from below a floor is told to skip to it (EventsFrom; Feed for peers; SkipTo): the
// index grows with the messages within retention, not with every message ever
// received. See compact.go.
//
// # Durability
//
// Accept returns only after the message's record is in the intake journal, fdatasynced
// (intake.go): its metadata, its ID and, for a body of at most 256 KiB received into
// memory (inline.go), the body itself; a larger body (or one received while the budget
// of bodies in memory is spent) is fsynced in its spooled file in
// tmp/ and tmp/ fsynced first, and the record names it. Concurrent Accepts share that fdatasync (one per group). The caller
// may answer SMTP 250 after that. The message is then indexed in the background, within
// milliseconds: its metadata and its "new" event committed in bbolt (bbolt fsyncs on
// commit) and its final file written from memory (or, for a spooled body, its spooled
// name recorded and the file linked to its final name), in batches with the body
// commits of the moment (group commit, group.go). Every read and write of
// the index first waits for the indexing of every message already acknowledged, so no
// caller sees the store without them; only the replication feed (feed.go: what peers
// read, and BeginBody) reads what the index has committed without waiting. Once a
// closed segment's messages are indexed, a syncfs(2) makes their bodies and names
// durable and the segment goes; Open replays what a crash left (replay.go). A body
// received from a peer takes its final name unsynced and is committed in a batch that
// makes the file system durable with one syncfs first (recv.go); each caller is woken
// only after the commit of the batch it was in. A caller who answers a client is never
// delayed waiting for others; background work (index entries of journaled messages,
// received bodies, peers' events) lingers up to 40 ms for company under load.
//
// # Imports
//
// mailstore imports only the standard library, go.etcd.io/bbolt and
// golang.org/x/sys/unix (syncfs, fdatasync). It must never import another package
// of this project: replication (mailrepl), SMTP intake and the daemon depend on it,
// not the other way round.
package mailstore

import "errors"

// Sentinel errors of the package. Returned errors wrap them with details; match
// them with errors.Is.
var (
	// ErrNotFound means the message (or its body on this node) is unknown,
	// deleted from disk, or purged.
	ErrNotFound = errors.New("mailstore: not found")
	// ErrGap means an event's sequence number is not the next one for its
	// origin: an earlier event of that origin is missing.
	ErrGap = errors.New("mailstore: gap in event sequence")
	// ErrChecksum means a received body does not match the size or SHA-256 of
	// its metadata; the partial file was discarded.
	ErrChecksum = errors.New("mailstore: body checksum mismatch")
	// ErrCorrupt means a stored body failed verification; it was moved aside
	// and the message is listed by Missing again.
	ErrCorrupt = errors.New("mailstore: corrupt body")
	// ErrClosed means the store is closed.
	ErrClosed = errors.New("mailstore: closed")
	// ErrInvalid means bad input: a malformed ID, state, event or option.
	ErrInvalid = errors.New("mailstore: invalid argument")
	// ErrBusy means another writer or verifier holds the message's body.
	ErrBusy = errors.New("mailstore: body busy")
	// ErrExists means the body is already stored; nothing to receive.
	ErrExists = errors.New("mailstore: body already stored")
	// ErrDeleted means an operation is refused because the message is deleted
	// (deleted is terminal).
	ErrDeleted = errors.New("mailstore: message deleted")
)
