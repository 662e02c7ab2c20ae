package daemon

import (
	"context"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pmgcm/pmgcm/cluster"
	"github.com/pmgcm/pmgcm/fsm"
	"github.com/pmgcm/pmgcm/internal/ctxwait"
	"github.com/pmgcm/pmgcm/transport"
)

// standingWatch finds out where this node stands when its peers know better: removed
// from the cluster (pmgcm delete elsewhere) or fenced (a forced promotion elsewhere). It
// asks the members on the join channel, each with its certificate pinned, how they see
// this node's certificate, and records a removal or fencing (which stops Raft). It runs
// when a peer refuses a connection (refused, the mux's hook), when the state machine no
// longer lists this node (kickNow), and as a backstop every standingInterval; and once,
// with a short deadline, before Raft starts.
//
// It reaches the rest of the daemon only through its fields, set once by Open.
type standingWatch struct {
	logger     hclog.Logger
	timeout    time.Duration // of one round of questions
	mux        *transport.Mux
	fsm        *fsm.FSM
	peers      *atomic.Pointer[peerCache]
	gate       *opGate
	self       func() nodeFile
	updateSelf func(func(*nodeFile)) error
	stopRaft   func()
	// forget wipes the cluster's secrets once a removal is recorded (clusterWiper.forget).
	forget func()

	kick    chan struct{}
	clients clientCache
}

// standingInterval is how often every node asks its peers where it stands, as a
// backstop: it learns of a removal or a fencing from the first connection a peer refuses
// to it (standingWatch.refused), or from its own state machine (followPeers).
const standingInterval = 10 * time.Second

// standingMinGap is the least time between two standing checks.
const standingMinGap = time.Second

// startupStandingTimeout bounds the peer check a member makes before it starts Raft.
const startupStandingTimeout = 1500 * time.Millisecond

// ask asks every other member, on the join channel with its fingerprint pinned,
// how it sees this node, and returns the standing the answers show (standMember when
// none shows anything else) with the answer it rests on. Only a peer that knows more
// than this node counts: one of a newer epoch, or one of the same epoch that has applied
// this node's admission. The answers count only if this node's identity did not change
// while it asked (a renewal or a join meanwhile makes them moot).
func (w *standingWatch) ask(ctx context.Context, timeout time.Duration) (standing, cluster.Membership) {
	cache := w.peers.Load()
	if cache == nil || cache.ClusterID == "" {
		return standing{}, cluster.Membership{}
	}
	id := w.mux.Identity()
	if id.Standalone() {
		return standing{}, cluster.Membership{}
	}
	me := w.self()
	myEpoch := cache.Epoch
	if cl := w.fsm.Cluster(); cl != nil && cl.Epoch > myEpoch {
		myEpoch = cl.Epoch
	}
	myFP := id.Fingerprint
	answers := w.askPeers(ctx, cache.Members, myFP, timeout)
	if w.mux.Identity().Fingerprint != myFP {
		return standing{}, cluster.Membership{} // the identity changed meanwhile: the answers are moot
	}
	for _, a := range answers {
		if a.ClusterID != cache.ClusterID {
			continue
		}
		switch {
		case a.Epoch > myEpoch && !a.Member:
			return removedFrom(a.ClusterID), a
		case a.Epoch > myEpoch && a.Fenced:
			return fencedBy(&fenceInfo{ClusterID: a.ClusterID, Epoch: a.Epoch, MasterCID: a.MasterCID, MasterName: a.MasterName, MasterIP: a.MasterIP}), a
		case a.Epoch == myEpoch && !a.Member && a.Applied >= me.JoinIndex && me.JoinIndex > 0:
			return removedFrom(a.ClusterID), a
		}
	}
	return standing{}, cluster.Membership{}
}

// askPeers asks every member but this node, in parallel on the join channel with each
// one's fingerprint pinned, how it sees the certificate fingerprint; it returns the
// answers of those that answered within timeout.
func (w *standingWatch) askPeers(ctx context.Context, members []fsm.Member, fingerprint string, timeout time.Duration) []cluster.Membership {
	me := w.self().CID
	var (
		mu  sync.Mutex
		out []cluster.Membership
		wg  sync.WaitGroup
	)
	w.clients.keep(members)
	for _, m := range members {
		if m.CID == me {
			continue
		}
		client, err := w.clients.get(m.Fingerprint)
		if err != nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			if a, err := client.CheckMembership(cctx, memberAddr(m), fingerprint); err == nil {
				mu.Lock()
				out = append(out, a)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return out
}

// clientCache keeps one pinned join-channel client per peer certificate, so that the
// standing check reuses its connections from one round to the next instead of making a
// new TLS client each time.
type clientCache struct {
	// local is the source address of the dials (the node's own).
	local   net.IP
	mu      sync.Mutex
	clients map[string]*cluster.Client // fingerprint -> client
}

// get returns the client pinned to fingerprint, made on first use.
func (c *clientCache) get(fingerprint string) (*cluster.Client, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cl, ok := c.clients[fingerprint]; ok {
		return cl, nil
	}
	hc, err := transport.PinnedHTTPClientFrom(c.local, transport.ChanJoin, fingerprint, startupStandingTimeout)
	if err != nil {
		return nil, err
	}
	if c.clients == nil {
		c.clients = map[string]*cluster.Client{}
	}
	cl := cluster.NewClient(hc)
	c.clients[fingerprint] = cl
	return cl, nil
}

// keep drops the clients of certificates no member holds any more.
func (c *clientCache) keep(members []fsm.Member) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for fp, cl := range c.clients {
		if !slices.ContainsFunc(members, func(m fsm.Member) bool { return m.Fingerprint == fp }) {
			cl.CloseIdleConnections()
			delete(c.clients, fp)
		}
	}
}

// closeAll drops every client's connections.
func (c *clientCache) closeAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for fp, cl := range c.clients {
		cl.CloseIdleConnections()
		delete(c.clients, fp)
	}
}

// run checks this node's standing with its peers when there is reason to (a
// peer refused a connection, or the local state machine no longer lists this node) and,
// as a backstop, every standingInterval; never more often than standingMinGap.
func (w *standingWatch) run(ctx context.Context) {
	defer w.clients.closeAll()
	backstop := time.NewTicker(standingInterval)
	defer backstop.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-backstop.C:
		case <-w.kick:
		}
		w.check(ctx)
		if ctxwait.Pause(ctx, standingMinGap) != nil {
			return
		}
	}
}

// kickNow asks run to check now. It never blocks.
func (w *standingWatch) kickNow() {
	if w == nil {
		return // not open yet
	}
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// refused is the mux's Refused hook: a peer refused this node's connection, and
// may say that the cluster moved to a newer epoch. Either way this node asks its peers
// where it stands, now rather than at the next backstop check.
func (w *standingWatch) refused(addr string, r transport.Refusal) {
	if w == nil {
		return
	}
	if r.Epoch != 0 {
		w.logger.Warn("a peer refused this node and names a newer epoch; checking this node's standing",
			"address", addr, "cluster-id", r.ClusterID, "epoch", r.Epoch, "reason", r.Reason)
	}
	w.kickNow()
}

// check acts on ask: a removed or fenced node stops Raft and says why.
func (w *standingWatch) check(ctx context.Context) {
	// A join, re-admission or renewal replaces the node's identity: asking with the old
	// one would make the peers disown it. So stay out of their way, and drop the answers
	// if one began meanwhile (the answers gathered before it began stay true).
	mark, free := w.gate.free()
	if !free || !w.self().standing().talksToPeers() {
		return
	}
	st, a := w.ask(ctx, w.timeout)
	if w.gate.since(mark) {
		return
	}
	w.apply(st, a)
}

// apply records a removal or fencing and stops Raft; it reports whether it did.
// A member's standing (st.kind == standMember) changes nothing.
func (w *standingWatch) apply(st standing, a cluster.Membership) bool {
	if !st.out() {
		return false
	}
	if st.kind == standRemoved {
		w.logger.Warn("this node was removed from the cluster; stopping raft", "cluster-id", a.ClusterID, "epoch", a.Epoch,
			"master-cid", a.MasterCID, "master-ip", a.MasterIP)
	} else {
		w.logger.Warn("this node was superseded by a forced promotion; stopping raft",
			"cluster-id", a.ClusterID, "epoch", a.Epoch, "master-cid", a.MasterCID, "master-ip", a.MasterIP)
	}
	if err := w.updateSelf(func(nf *nodeFile) { *nf = nf.withStanding(st) }); err != nil {
		w.logger.Error("cannot record this node's standing", "error", err)
	}
	w.stopRaft()
	if st.kind == standRemoved && w.forget != nil {
		w.forget()
	}
	return true
}
