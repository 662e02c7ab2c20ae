package daemon

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/pmgcm/pmgcm/cluster"
	"github.com/pmgcm/pmgcm/fsm"
	"github.com/pmgcm/pmgcm/transport"
)

// standingInterval is how often every node asks its peers where it stands, as a
// backstop: it learns of a removal or a fencing from the first connection a peer refuses
// to it (peerRefused), or from its own state machine (followPeers).
const standingInterval = 10 * time.Second

// standingMinGap is the least time between two standing checks.
const standingMinGap = time.Second

// startupStandingTimeout bounds the peer check a member makes before it starts Raft.
const startupStandingTimeout = 1500 * time.Millisecond

// askStanding asks every other member, on the join channel with its fingerprint pinned,
// how it sees this node, and returns the standing the answers show (standMember when
// none shows anything else) with the answer it rests on. Only a peer that knows more
// than this node counts: one of a newer epoch, or one of the same epoch that has applied
// this node's admission. The answers count only if this node's identity did not change
// while it asked (a renewal or a join meanwhile makes them moot).
func (d *Daemon) askStanding(ctx context.Context, timeout time.Duration) (standing, cluster.Membership) {
	cache := d.peers.Load()
	if cache == nil || cache.ClusterID == "" {
		return standing{}, cluster.Membership{}
	}
	id := d.mux.Identity()
	if id.Standalone() {
		return standing{}, cluster.Membership{}
	}
	me := d.self()
	myEpoch := cache.Epoch
	if cl := d.fsm.Cluster(); cl != nil && cl.Epoch > myEpoch {
		myEpoch = cl.Epoch
	}
	myFP := id.Fingerprint
	answers := d.askPeers(ctx, cache.Members, myFP, timeout)
	if d.mux.Identity().Fingerprint != myFP {
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
func (d *Daemon) askPeers(ctx context.Context, members []fsm.Member, fingerprint string, timeout time.Duration) []cluster.Membership {
	me := d.self().CID
	var (
		mu  sync.Mutex
		out []cluster.Membership
		wg  sync.WaitGroup
	)
	d.standingClients.keep(members)
	for _, m := range members {
		if m.CID == me {
			continue
		}
		client, err := d.standingClients.get(m.Fingerprint)
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
	hc, err := transport.PinnedHTTPClient(transport.ChanJoin, fingerprint, startupStandingTimeout)
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

// watchStanding checks this node's standing with its peers when there is reason to (a
// peer refused a connection, or the local state machine no longer lists this node) and,
// as a backstop, every standingInterval; never more often than standingMinGap.
func (d *Daemon) watchStanding() {
	defer d.bg.Done()
	defer d.standingClients.closeAll()
	ctx, cancel := d.stopContext()
	defer cancel()
	backstop := time.NewTicker(standingInterval)
	defer backstop.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-backstop.C:
		case <-d.standingKick:
		}
		d.checkStanding(ctx)
		if pause(ctx, standingMinGap) != nil {
			return
		}
	}
}

// kickStanding asks watchStanding to check now. It never blocks.
func (d *Daemon) kickStanding() {
	select {
	case d.standingKick <- struct{}{}:
	default:
	}
}

// peerRefused is the mux's Refused hook: a peer refused this node's connection, and
// may say that the cluster moved to a newer epoch. Either way this node asks its peers
// where it stands, now rather than at the next backstop check.
func (d *Daemon) peerRefused(addr string, r transport.Refusal) {
	if r.Epoch != 0 {
		d.logger.Warn("a peer refused this node and names a newer epoch; checking this node's standing",
			"address", addr, "cluster-id", r.ClusterID, "epoch", r.Epoch, "reason", r.Reason)
	}
	d.kickStanding()
}

// checkStanding acts on askStanding: a removed or fenced node stops Raft and says why.
func (d *Daemon) checkStanding(ctx context.Context) {
	// A join, re-admission or renewal replaces the node's identity: asking with the old
	// one would make the peers disown it. So stay out of their way, and drop the answers
	// if one began meanwhile (the answers gathered before it began stay true).
	mark, free := d.gate.free()
	if !free || !d.standing().talksToPeers() {
		return
	}
	st, a := d.askStanding(ctx, d.cfg.RPCTimeout)
	if d.gate.since(mark) {
		return
	}
	d.applyStanding(st, a)
}

// applyStanding records a removal or fencing and stops Raft; it reports whether it did.
// A member's standing (st.kind == standMember) changes nothing.
func (d *Daemon) applyStanding(st standing, a cluster.Membership) bool {
	if !st.out() {
		return false
	}
	if st.kind == standRemoved {
		d.logger.Warn("this node was removed from the cluster; stopping raft", "cluster-id", a.ClusterID, "epoch", a.Epoch,
			"master-cid", a.MasterCID, "master-ip", a.MasterIP)
	} else {
		d.logger.Warn("this node was superseded by a forced promotion; stopping raft",
			"cluster-id", a.ClusterID, "epoch", a.Epoch, "master-cid", a.MasterCID, "master-ip", a.MasterIP)
	}
	if err := d.updateSelf(func(nf *nodeFile) { *nf = nf.withStanding(st) }); err != nil {
		d.logger.Error("cannot record this node's standing", "error", err)
	}
	if n := d.rn(); n != nil {
		if err := n.Close(); err != nil {
			d.logger.Warn("stopping raft", "error", err)
		}
	}
	return true
}

// membershipOf says how this node sees the certificate fingerprint
// (cluster.JoinPathMembership). A removed or fenced node says nothing.
func (d *Daemon) membershipOf(fingerprint string) cluster.Membership {
	out := cluster.Membership{}
	if cl := d.fsm.Cluster(); cl != nil && !d.standing().out() {
		out.ClusterID, out.Epoch, out.Applied = cl.ID, cl.Epoch, d.fsm.AppliedIndex()
		m, ok := d.fsm.MemberByFingerprint(fingerprint)
		out.Member, out.CID, out.Fenced = ok, m.CID, ok && m.Fenced(cl.Epoch)
		if master, ok := d.masterMember(); ok {
			out.MasterCID, out.MasterName, out.MasterIP = master.CID, master.Name, master.IP
		}
	}
	return out
}

// masterMember returns the member that leads now, as this node knows it.
func (d *Daemon) masterMember() (fsm.Member, bool) {
	_, id := d.rn().Leader()
	if id == "" {
		return fsm.Member{}, false
	}
	return d.fsm.Member(parseCID(id))
}

// activeMembers returns the members of the current epoch: the ones that take part in
// Raft. Fenced members stay listed until they are re-admitted or deleted. While the state
// machine is still replaying the log after a start, the member cache answers.
func (d *Daemon) activeMembers() []fsm.Member {
	members, epoch := d.fsm.Members(), uint64(0)
	if cl := d.fsm.Cluster(); cl != nil {
		epoch = cl.Epoch
	}
	if cache := d.peers.Load(); cache != nil && cache.ClusterID != "" && d.fsm.AppliedIndex() < cache.Index {
		members, epoch = cache.Members, cache.Epoch
	}
	var out []fsm.Member
	for _, m := range members {
		if !m.Fenced(epoch) {
			out = append(out, m)
		}
	}
	return out
}

// fencedError explains a fenced node's refusal and the way back.
func fencedError(f *fenceInfo) error {
	return fmt.Errorf("%w: a forced promotion made cid %d (%s, %s) master of cluster %s at epoch %d; bring this node back with: pmgcm sync --master_ip %s",
		ErrFenced, f.MasterCID, f.MasterName, f.MasterIP, f.ClusterID, f.Epoch, f.MasterIP)
}
