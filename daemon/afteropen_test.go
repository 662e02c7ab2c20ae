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
// errStarting if the request ends or the daemon closes first: it never reads a mail
// system that is not there.
func TestRPCBeforeMailOpens(t *testing.T) {
	d := &Daemon{stop: make(chan struct{}), opened: make(chan struct{})}
	if d.mailSys() != nil {
		t.Fatal("mailSys returned a mail system before Open finished")
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := (rpcHandler{d}).CheckMail(ctx, cluster.MailCheckRequest{}); !errors.Is(err, errStarting) {
		t.Fatalf("CheckMail before the mail store opened: %v, want errStarting", err)
	}
	if _, err := (rpcHandler{d}).SetMaintenance(ctx, true); !errors.Is(err, errStarting) {
		t.Fatalf("SetMaintenance before the mail store opened: %v, want errStarting", err)
	}

	// Open finishing wakes a request that waits.
	done := make(chan error, 1)
	go func() { done <- d.whenOpened(context.Background()) }()
	d.mail = &mailSystem{}
	close(d.opened)
	if err := <-done; err != nil {
		t.Fatalf("whenOpened once Open finished: %v", err)
	}
	if d.mailSys() != d.mail {
		t.Fatal("mailSys did not return the mail system once Open finished")
	}

	// A daemon closing before Open finished refuses the waiting request.
	d2 := &Daemon{stop: make(chan struct{}), opened: make(chan struct{})}
	close(d2.stop)
	if err := d2.whenOpened(context.Background()); !errors.Is(err, errStarting) {
		t.Fatalf("whenOpened on a closed daemon: %v, want errStarting", err)
	}
}
