package daemon

import (
	"context"
	"testing"
)

// A leader duty registered before the mail system opens must not run until Open has
// finished: a single node that won its election early crashed in backupMail (CI, 2026-12-02).
func TestAfterOpenWaitsForOpen(t *testing.T) {
	opened := make(chan struct{})
	ran := false
	duty := afterOpen(opened, func(context.Context) { ran = true })

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	duty(ctx) // the term ended before Open finished
	if ran {
		t.Fatal("the duty ran before Open finished")
	}

	close(opened)
	duty(context.Background())
	if !ran {
		t.Fatal("the duty did not run once Open had finished")
	}
}
