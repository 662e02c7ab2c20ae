package raftnode

import (
	"testing"
	"time"
)

// TestLeaderChanged: the channel fires when the node sees a leader elected, and when the
// node closes; after Close it is nil (never fires).
func TestLeaderChanged(t *testing.T) {
	n, _ := openNode(t, t.TempDir())
	ch := n.LeaderChanged()
	if n.IsLeader() {
		t.Skip("elected before the channel was taken")
	}
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatal("no leader change seen while the node elected itself")
	}
	ch = n.LeaderChanged()
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not wake a waiter")
	}
	if n.LeaderChanged() != nil {
		t.Fatal("LeaderChanged after Close is not nil")
	}
}
