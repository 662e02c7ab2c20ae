package raftnode

import (
	"context"
	"testing"

	"github.com/hashicorp/raft"
)

// TestMarkReadyEndedTerm: a term whose barrier returns after the term ended (its ctx
// cancelled), or after its Raft instance stopped or was replaced (Stop, Restart), does
// not set readyTerm: it would survive the restart and make a Raft back in the same term
// count as ready before its own barrier.
func TestMarkReadyEndedTerm(t *testing.T) {
	old, cur := new(raft.Raft), new(raft.Raft) // compared by identity only
	duty := func(context.Context) {}
	n := &Node{duties: []LeaderDuty{duty}}
	live := context.Background()
	ended, cancel := context.WithCancel(live)
	cancel()

	if _, ok := n.markReady(live, cur, 5); ok || n.readyTerm != 0 {
		t.Fatalf("stopped node: ok %v, readyTerm %d", ok, n.readyTerm)
	}
	n.run = &instance{raft: cur}
	if _, ok := n.markReady(live, old, 5); ok || n.readyTerm != 0 {
		t.Fatalf("a replaced instance's term: ok %v, readyTerm %d", ok, n.readyTerm)
	}
	if _, ok := n.markReady(ended, cur, 5); ok || n.readyTerm != 0 {
		t.Fatalf("an ended term: ok %v, readyTerm %d", ok, n.readyTerm)
	}
	duties, ok := n.markReady(live, cur, 6)
	if !ok || n.readyTerm != 6 || len(duties) != 1 {
		t.Fatalf("the running term: ok %v, readyTerm %d, %d duties", ok, n.readyTerm, len(duties))
	}
}
