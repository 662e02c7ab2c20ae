package raftnode

import (
	"errors"
	"fmt"
	"syscall"
)

// Sentinel errors returned by this package. Callers match them with errors.Is.
var (
	// ErrNotLeader means the command must be sent to the leader; see Node.Leader.
	ErrNotLeader = errors.New("this node is not the master")
	// ErrNoLeader means there is no known leader: an election is under way or quorum is lost.
	ErrNoLeader = errors.New("no master elected")
	// ErrLocked means another process holds the Raft database open.
	ErrLocked = errors.New("raft database is locked by another process")
	// ErrCorrupt means a Raft data file failed its integrity checks.
	ErrCorrupt = errors.New("raft data is corrupt")
	// ErrNoSpace means a Raft data file could not be written for want of disk space (the
	// write-ahead log allocates each segment whole, walSegmentSize).
	ErrNoSpace = errors.New("no space left for the raft data")
	// ErrClosed means Raft is not running on this node: stopped (Stop, or a Restart or
	// ForceRecover under way) or closed for good (Close).
	ErrClosed = errors.New("raft node is closed")
	// ErrUnknownOutcome means a command was sent but leadership was lost before it was
	// known to commit: it may or may not take effect. It must not be proposed again.
	ErrUnknownOutcome = errors.New("outcome unknown: leadership was lost while the command was in flight")
	// ErrTimeout means the operation did not start before its deadline: Raft did not
	// take a proposal in time (raft's ErrEnqueueTimeout), so nothing was appended and it
	// may be sent again; or a wait (ReadIndex, WaitApplied) ran out. A proposal that was
	// appended and then not known to commit is ErrUnknownOutcome, never ErrTimeout.
	ErrTimeout = errors.New("raft operation timed out")
	// ErrTransferFailed means a leadership transfer did not complete: the target did not
	// win its election in time (a busy or changing cluster). Leadership stayed where it
	// was or moved by an ordinary election; nothing else changed, and asking again is safe.
	ErrTransferFailed = errors.New("leadership transfer did not complete")
)

// storeErr is the error of a Raft data file at path that failed to open or read: err
// wrapped in ErrNoSpace when the disk is full, else in ErrCorrupt.
func storeErr(path string, err error) error {
	if errors.Is(err, syscall.ENOSPC) {
		return fmt.Errorf("%w: %s: %v", ErrNoSpace, path, err)
	}
	return fmt.Errorf("%w: %s: %v", ErrCorrupt, path, err)
}
