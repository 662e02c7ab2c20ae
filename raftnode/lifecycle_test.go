package raftnode

import (
	"testing"

	"github.com/pmgcm/pmgcm/fsm"
)

// TestOpenQuickClose: Close right after Open, before the node's goroutines ran, neither
// panics nor races (run with -race).
func TestOpenQuickClose(t *testing.T) {
	dir := t.TempDir()
	for i := 0; i < 20; i++ {
		layer := newLayer(t)
		n, err := New(testConfig(dir, layer), fsm.New(), layer)
		if err != nil {
			t.Fatal(err)
		}
		if err := n.Open(); err != nil {
			t.Fatal(err)
		}
		if err := n.Close(); err != nil {
			t.Fatalf("close %d: %v", i, err)
		}
	}
}
