package raftnode

import (
	"errors"
	"sync"

	"github.com/hashicorp/raft"
)

// errStopping answers a heartbeat that arrives while Raft stops.
var errStopping = errors.New("raftnode: raft is stopping")

// gatedTransport is raft's NetworkTransport with a gate on its heartbeat fast path.
// NetworkTransport runs a heartbeat's handler (Raft's processHeartbeat, which may store
// a new term) on the connection's goroutine, not on one of Raft's: Raft's Shutdown does
// not wait for it, and closing the stores after Shutdown could pull them from under a
// heartbeat being handled (hashicorp/raft then panics: "failed to save current term:
// database not open"; seen once in 45 joins, whose swap of the Raft state stops Raft
// and closes its stores while the cluster's heartbeats come in). drain waits for the
// handlers that run and refuses the heartbeats that come after.
type gatedTransport struct {
	*raft.NetworkTransport

	mu      sync.Mutex
	drained bool
	running sync.WaitGroup // the heartbeat handlers running now
}

// SetHeartbeatHandler sets cb as the heartbeat handler, behind the gate.
func (g *gatedTransport) SetHeartbeatHandler(cb func(rpc raft.RPC)) {
	g.wrapHeartbeat(g.NetworkTransport.SetHeartbeatHandler, cb)
}

// wrapHeartbeat gives set cb behind the gate (nil stays nil).
func (g *gatedTransport) wrapHeartbeat(set func(func(raft.RPC)), cb func(rpc raft.RPC)) {
	if cb == nil {
		set(nil)
		return
	}
	set(func(rpc raft.RPC) {
		if !g.enter() {
			rpc.Respond(nil, errStopping)
			return
		}
		defer g.running.Done()
		cb(rpc)
	})
}

// enter admits one heartbeat handler, unless the gate is drained.
func (g *gatedTransport) enter() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.drained {
		return false
	}
	g.running.Add(1)
	return true
}

// drain refuses the heartbeats that come from now on and waits for the handlers that
// run to return. Call it after Raft's Shutdown, before closing the stores.
func (g *gatedTransport) drain() {
	g.mu.Lock()
	g.drained = true
	g.mu.Unlock()
	g.running.Wait()
}
