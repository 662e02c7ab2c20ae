package raftnode

import (
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// TestHeartbeatGateWaitsForRunningHandler: drain returns only once the heartbeat handler
// that runs has returned (the stores it writes are closed after drain), and a heartbeat
// that comes after drain is answered with an error without reaching the handler.
func TestHeartbeatGateWaitsForRunningHandler(t *testing.T) {
	var handler func(raft.RPC)
	g := &gatedTransport{}
	install := func(cb func(raft.RPC)) { handler = cb }
	// The gate wraps cb as SetHeartbeatHandler does; install stands for NetworkTransport's.
	entered, release := make(chan struct{}), make(chan struct{})
	calls := 0
	g.wrapHeartbeat(install, func(rpc raft.RPC) {
		calls++
		close(entered)
		<-release
		rpc.Respond(&raft.AppendEntriesResponse{}, nil)
	})

	first := make(chan raft.RPCResponse, 1)
	go handler(raft.RPC{Command: &raft.AppendEntriesRequest{}, RespChan: first})
	<-entered
	drained := make(chan struct{})
	go func() {
		g.drain()
		close(drained)
	}()
	select {
	case <-drained:
		t.Fatal("drain returned while a heartbeat handler ran")
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	<-drained
	if r := <-first; r.Error != nil {
		t.Fatalf("the running heartbeat: %v", r.Error)
	}

	late := make(chan raft.RPCResponse, 1)
	handler(raft.RPC{Command: &raft.AppendEntriesRequest{}, RespChan: late})
	if r := <-late; !errors.Is(r.Error, errStopping) {
		t.Fatalf("heartbeat after drain: %v, want errStopping", r.Error)
	}
	if calls != 1 {
		t.Fatalf("handler called %d times, want 1 (not after drain)", calls)
	}
}
