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
// instead of panicking, and keeps applying the following entries.
//
// # Snapshots
//
// [FSM.Snapshot] only copies the maps (values are immutable byte slices and are
// shared); the snapshot is serialized in Persist, concurrently with Apply, as
// newline-delimited JSON: a header line, one record per line and a trailer
// carrying counts and a SHA-256 of everything before it. [FSM.Restore] builds
// the new state aside and swaps it in only if the whole stream checks out.
package fsm
