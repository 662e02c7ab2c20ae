package raftnode

import (
	"errors"
	"os"
	"syscall"
	"testing"

	"github.com/hashicorp/raft"
)

// TestAppendErr: an error of a future that has a log index (the entry was appended) is
// ErrUnknownOutcome whatever raft said; without an index the proposal never reached the
// log and maps to an error that lets it be sent again (ErrTimeout for raft's
// ErrEnqueueTimeout), never to ErrUnknownOutcome.
func TestAppendErr(t *testing.T) {
	n := &Node{}
	storeErr := errors.New("disk full")
	for _, tc := range []struct {
		name  string
		err   error
		index uint64
		want  error
	}{
		{"enqueue timeout", raft.ErrEnqueueTimeout, 0, ErrTimeout},
		{"shutdown before enqueue", raft.ErrRaftShutdown, 0, ErrClosed},
		{"follower", raft.ErrNotLeader, 0, ErrNoLeader},
		{"transfer in progress", raft.ErrLeadershipTransferInProgress, 0, ErrNotLeader},
		{"leadership lost", raft.ErrLeadershipLost, 7, ErrUnknownOutcome},
		// processLogs answers ErrRaftShutdown to a committed entry it could not hand to
		// the state machine: it may well have taken effect.
		{"shutdown after append", raft.ErrRaftShutdown, 7, ErrUnknownOutcome},
		{"log store failed", storeErr, 7, ErrUnknownOutcome},
		{"enqueue timeout never has an index", raft.ErrEnqueueTimeout, 0, ErrTimeout},
	} {
		got := n.appendErr(tc.err, tc.index)
		if !errors.Is(got, tc.want) {
			t.Errorf("%s: appendErr(%v, %d) = %v, want %v", tc.name, tc.err, tc.index, got, tc.want)
		}
		if tc.index == 0 && errors.Is(got, ErrUnknownOutcome) {
			t.Errorf("%s: a proposal that was never appended maps to ErrUnknownOutcome", tc.name)
		}
		if tc.index > 0 && (errors.Is(got, ErrTimeout) || errors.Is(got, ErrClosed) || errors.Is(got, ErrNotLeader) || errors.Is(got, ErrNoLeader)) {
			t.Errorf("%s: an appended entry maps to %v, which callers may send again", tc.name, got)
		}
	}
}

// TestStoreErrNoSpace: a data file that cannot be written for a full disk is ErrNoSpace,
// not ErrCorrupt (the operator must free space, not move the data directory aside).
func TestStoreErrNoSpace(t *testing.T) {
	full := storeErr("/x/wal", &os.PathError{Op: "write", Path: "/x/wal/00001.wal", Err: syscall.ENOSPC})
	if !errors.Is(full, ErrNoSpace) || errors.Is(full, ErrCorrupt) {
		t.Fatalf("a full disk: %v", full)
	}
	bad := storeErr("/x/wal", errors.New("bad header"))
	if !errors.Is(bad, ErrCorrupt) || errors.Is(bad, ErrNoSpace) {
		t.Fatalf("a bad file: %v", bad)
	}
}
