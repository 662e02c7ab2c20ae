package fsm

import "errors"

// Sentinel errors returned by this package. They are always wrapped with
// context (fmt.Errorf with %w); match them with errors.Is.
var (
	// ErrUnknownCommand is returned when a command's encoding version or type
	// is not known to this node (a newer node proposed it), or asks for a
	// cluster version above this build's. Apply then halts (see ErrHalted).
	ErrUnknownCommand = errors.New("unknown command")
	// ErrHalted is returned by Apply, and by Snapshot, once the FSM met a log
	// entry it cannot apply (ErrUnknownCommand): it applies nothing more, so
	// that it never diverges from the members that applied the entry.
	ErrHalted = errors.New("stopped applying the replicated log")
	// ErrBadCommand is returned for a malformed command: truncated or invalid
	// encoding, or field values that violate the command's rules.
	ErrBadCommand = errors.New("bad command")
	// ErrClusterExists is returned by CreateCluster when a cluster exists.
	ErrClusterExists = errors.New("cluster already exists")
	// ErrNoCluster is returned by member commands when no cluster exists.
	ErrNoCluster = errors.New("no cluster")
	// ErrVersionConflict is returned when a conditional configuration write
	// finds a different version than the one it expected.
	ErrVersionConflict = errors.New("version conflict")
	// ErrNotFound is returned when a configuration key does not exist.
	ErrNotFound = errors.New("not found")
	// ErrMemberExists is returned when a member with the same name, IP or
	// certificate fingerprint already exists.
	ErrMemberExists = errors.New("member already exists")
	// ErrUnknownMember is returned when no member has the given CID.
	ErrUnknownMember = errors.New("unknown member")
	// ErrInvalidKey is returned for a configuration key that breaks the rules
	// of ValidateKey.
	ErrInvalidKey = errors.New("invalid key")
	// ErrTooLarge is returned for a configuration value over MaxValueLen, and
	// for a ConfigSet that would take the store over MaxStateBytes.
	ErrTooLarge = errors.New("value too large")
	// ErrBadSnapshot is returned by Restore for a truncated, corrupt or
	// unknown-format snapshot.
	ErrBadSnapshot = errors.New("bad snapshot")
	// ErrValueUnreadable is returned by a read of a configuration value kept in a spill
	// file (see FSM.SpillTo) that the file could not give back: a disk error. The
	// entry exists; the replicated state (the Raft log and snapshots) still holds it.
	ErrValueUnreadable = errors.New("configuration value unreadable")
)
