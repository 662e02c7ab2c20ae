package daemon

import (
	"context"
	"errors"
	"testing"

	"github.com/pmgcm/pmgcm/cluster"
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

// A peer's mail check or maintenance request that arrives while Open is still opening
// the mail system (RPC is served before it) waits for it, and is refused with
// errStarting if the request ends first, or as shutting down if the daemon closes: it
// never reads a mail system that is not there.
func TestRPCBeforeMailOpens(t *testing.T) {
	d := &Daemon{stop: make(chan struct{}), opened: make(chan struct{})}
	d.drain = newStopDrain(d)
	if d.mailSys() != nil {
		t.Fatal("mailSys returned a mail system before openMail")
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := (rpcHandler{d}).CheckMail(ctx, cluster.MailCheckRequest{}); !errors.Is(err, errStarting) {
		t.Fatalf("CheckMail before the mail store opened: %v, want errStarting", err)
	}
	if _, err := (rpcHandler{d}).SetMaintenance(ctx, true); !errors.Is(err, errStarting) {
		t.Fatalf("SetMaintenance before the mail store opened: %v, want errStarting", err)
	}

	// The mail system opening wakes a request that waits.
	done := make(chan error, 1)
	go func() { done <- d.whenMailOpen(context.Background()) }()
	d.mail = &mailSystem{}
	close(d.opened)
	if err := <-done; err != nil {
		t.Fatalf("whenMailOpen once the mail system opened: %v", err)
	}
	if d.mailSys() != d.mail {
		t.Fatal("mailSys did not return the mail system once it opened")
	}

	// A daemon closing before the mail system opened refuses the waiting request as
	// shutting down (retry on another node), not as starting.
	d2 := &Daemon{stop: make(chan struct{}), opened: make(chan struct{})}
	d2.drain = newStopDrain(d2)
	close(d2.stop)
	if err := d2.whenMailOpen(context.Background()); !errors.Is(err, cluster.ErrShuttingDown) {
		t.Fatalf("whenMailOpen on a closed daemon: %v, want ErrShuttingDown", err)
	}
}
