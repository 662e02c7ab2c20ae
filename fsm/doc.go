// Package fsm is the deterministic Raft state machine of pmgcm.
//
// It owns the replicated state of a cluster: the cluster identity (ID, epoch,
// CA, join token hash, next CID), the member list (CID, name, IP, port,
// certificate fingerprint, suffrage) and the configuration key/value entries.
// It also owns the versioned wire encoding of the commands that change that
// state, and the streaming snapshot format used to compact the Raft log.
//
// The package must never import other pmgcm packages: it depends only on the
// standard library and github.com/hashicorp/raft, so that every layer above
// (raftnode, transport, cli) can depend on it without cycles.
//
// # Determinism
//
// [FSM.Apply] runs on every node for every committed log entry and must
// produce the same state everywhere. It therefore reads no clock, no random
// source, no local identity and never depends on map iteration order. Anything
// that needs a clock or randomness (timestamps, cluster IDs, CIDs) is stamped
// into the command by the proposer. The validation rules in Apply are part of
// the replicated semantics: changing them changes how old log entries replay,
// so a change of meaning needs a new [CommandType] or a new [EncodingVersion].
//
// # Encoding
//
// A command on the wire is one byte of [EncodingVersion], one byte of
// [CommandType], then a JSON body. A node that meets a version or type it does
// not know refuses the entry with an error wrapping [ErrUnknownCommand]
// instead of panicking, and halts ([ErrHalted]): it applies nothing more, and
// takes no snapshot, until it is restarted on a build that knows the entry
// (release 0.1.0 skipped such an entry and went on, which is why a command of
// a new feature level is proposed only once every member reports that level;
// see [SetClusterVersion] and package internal/version). A new field in an
// existing command is just as unknown to an older node (it refuses the
// command as malformed, ErrBadCommand, and goes on): it too needs the cluster
// version's gate.
//
// # Watch
//
// A ConfigDelete leaves a tombstone (key, version of the deletion) so that
// [FSM.Changes] can tell a watcher about deletions as well as values; a later
// ConfigSet of the key removes it. At most [MaxTombstones] are kept: the
// oldest (by version, never by map order) is dropped first and the horizon
// rises to its version. A watcher resuming from below the horizon may have
// missed a deletion, so it gets the whole state instead (reset). Tombstones and
// the horizon are replicated state: Apply maintains them and snapshots carry
// them.
//
// # Limits
//
// Keys follow [ValidateKey] (they double as relative file paths for the
// daemon's export directory), values are at most [MaxValueLen] bytes and the
// whole store at most [MaxStateBytes] (keys and values of the entries plus the
// keys of the tombstones, kept incrementally by Apply). The ban on "." and
// ".." segments came after keys could be written: Restore and ConfigDelete
// still accept such keys, so old states load and their entries can be removed.
//
// # Snapshots
//
// [FSM.Snapshot] only copies the maps (values are immutable byte slices, or places in a
// spill file that is only appended to, and are shared); the snapshot is serialized in Persist, concurrently with Apply, as
// newline-delimited JSON: a header line, one record per line and a trailer
// carrying counts and a SHA-256 of everything before it. [FSM.Restore] builds
// the new state aside and swaps it in only if the whole stream checks out. It
// reads every format from 1 to [SnapshotFormat].
//
// # Values out of the heap
//
// With [FSM.SpillTo] the values of 64 bytes or more live in append-only segment files
// (a cache of the replicated state, never synced, emptied at each start) and the state
// keeps their place; reads copy them back outside the lock, so a node's resident memory
// follows the number of keys, not the size of the data (spill.go). The state, its
// snapshots and its hash are the same whether values are spilled or not.
package fsm
