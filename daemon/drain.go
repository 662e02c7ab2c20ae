package daemon

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/pmgcm/pmgcm/cluster"
)

// Stopping without losing or hanging a write (DESIGN rule 8). Close takes these steps,
// in this order:
//
//  1. d.stop closes: from now on the control socket answers every new request but a
//     read with cluster.ErrShuttingDown ("retry on another node"); SMTP drains
//     (drainMail); then the control socket stops listening and the requests in flight
//     finish (bounded), local writes on the master included.
//  2. The mail path stops.
//  3. drainForwarded: writes forwarded from other nodes that arrive from now on are
//     answered cluster.ErrShuttingDown before anything is proposed (the forwarding node
//     waits for the next master and sends them there); those in flight finish, within
//     forwardDrainTimeout.
//  4. Raft stops; raftnode's Close first hands leadership over (bounded) when this
//     node leads, and the forwarding nodes send the writes refused in 3 to the new master.
//  5. closeServers: the cluster servers close once no member takes this node for a live
//     master any more; closing a connection under a forwarded write that was just sent
//     would make its outcome unknown.
//  6. answerControl: a control-socket request still in flight after step 1's bound has
//     failed by now (Raft and the cluster port are closed); it gets its answer (an error
//     that says the outcome is unknown) before the process exits.

// forwardDrainTimeout bounds step 3: longer than one apply of a healthy cluster by far;
// a write still in flight after it is answered by Raft's shutdown (an error, never a
// silent loss).
const forwardDrainTimeout = 2 * time.Second

// drainGate counts the requests in flight of one kind and, once closed, refuses new ones.
// The zero value is open.
type drainGate struct {
	mu     sync.Mutex
	closed bool
	n      int
	idle   chan struct{} // closed when closed and n is 0; made by close
}

// enter admits one request (leave must follow), or returns false once the gate closed.
func (g *drainGate) enter() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.n++
	return true
}

// leave ends a request that enter admitted.
func (g *drainGate) leave() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.n--
	if g.closed && g.n == 0 {
		close(g.idle)
	}
}

// closeAndWait refuses new requests and waits until those in flight have left, or ctx
// ends; it returns how many were still in flight then.
func (g *drainGate) closeAndWait(ctx context.Context) int {
	g.mu.Lock()
	if !g.closed {
		g.closed = true
		g.idle = make(chan struct{})
		if g.n == 0 {
			close(g.idle)
		}
	}
	idle := g.idle
	g.mu.Unlock()
	select {
	case <-idle:
		return 0
	case <-ctx.Done():
		g.mu.Lock()
		defer g.mu.Unlock()
		return g.n
	}
}

// errShuttingDown is the answer to a request refused because this node is stopping.
func (d *Daemon) errShuttingDown() error {
	return fmt.Errorf("%w: pmgclusterd on %s is stopping; retry on another node (pmgcm status lists them)",
		cluster.ErrShuttingDown, d.cfg.Addr())
}

// refuseWhileStopping answers every request of the control socket but a read with
// cluster.ErrShuttingDown once Close has begun: the request is not started, so the client
// can tell and retry elsewhere, instead of a write cut off half-way.
func (d *Daemon) refuseWhileStopping(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if d.stopping() && r.Method != http.MethodGet && r.Method != http.MethodHead {
			writeErr(w, d.errShuttingDown())
			return
		}
		h.ServeHTTP(w, r)
	})
}

// drainForwarded is step 3 of Close: refuse forwarded writes from now on, and wait for
// those in flight (bounded).
func (d *Daemon) drainForwarded() {
	ctx, cancel := context.WithTimeout(context.Background(), forwardDrainTimeout)
	defer cancel()
	if n := d.forwarded.closeAndWait(ctx); n > 0 {
		d.logger.Warn("stopping with forwarded writes still in flight; Raft's shutdown answers them", "in-flight", n)
	}
}

// closeServers is step 5 of Close; led says whether this node was the master when its
// Raft stopped (else nobody forwards here). Raft has stopped: the other nodes stop sending
// forwarded writes here once they have not heard from this node for half a heartbeat
// timeout (cluster.Forwarder counts such a master as none); until then the servers stay
// open and answer cluster.ErrShuttingDown, so that no connection closes under a write
// in flight.
func (d *Daemon) closeServers(led bool) {
	if led && d.cfg.Raft.HeartbeatTimeout > 0 {
		t := time.NewTimer(d.cfg.Raft.HeartbeatTimeout/2 + 50*time.Millisecond)
		<-t.C
	}
	for _, srv := range d.servers {
		_ = srv.Close()
	}
}

// answerControlTimeout bounds step 6 of Close.
const answerControlTimeout = time.Second

// answerControl is step 6 of Close: wait (bounded) until the control-socket requests
// still in flight have written their answers. It returns at once when there are none.
func (d *Daemon) answerControl() {
	if d.ctl == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), answerControlTimeout)
	defer cancel()
	if err := d.ctl.Shutdown(ctx); err != nil && ctx.Err() != nil {
		d.logger.Warn("stopping with control-socket requests unanswered", "error", err)
	}
}
