package daemon

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/pmgcm/pmgcm/fsm"
	"github.com/pmgcm/pmgcm/transport"
)

// standingInterval is how often every node asks its peers where it stands.
const standingInterval = 2 * time.Second

// startupStandingTimeout bounds the peer check a member makes before it starts Raft.
const startupStandingTimeout = 1500 * time.Millisecond

// membership is the answer of joinCheckPath: how the answering node sees a certificate.
type membership struct {
	ClusterID string `json:"cluster_id"`
	Epoch     uint64 `json:"epoch"`
	Member    bool   `json:"member"`
	CID       uint64 `json:"cid"`
	// Fenced is true when the member was left in an older epoch by a forced promotion.
	Fenced bool `json:"fenced"`
	// Applied is the answering node's state-machine index.
	Applied uint64 `json:"applied"`
	// Master is the answering node's master, if it knows one.
	MasterCID  uint64 `json:"master_cid,omitempty"`
	MasterName string `json:"master_name,omitempty"`
	MasterIP   string `json:"master_ip,omitempty"`
}

// standing is what the peers say of this node.
type standing int

const (
	standingOK standing = iota
	standingRemoved
	standingFenced
)

// askStanding asks every other member, on the join channel with its fingerprint pinned,
// how it sees this node, and returns the verdict with the answer it rests on. Only a
// peer that knows more than this node counts: one of a newer epoch, or one of the same
// epoch that has applied this node's admission.
func (d *Daemon) askStanding(ctx context.Context, timeout time.Duration) (standing, membership) {
	cache := d.peers.Load()
	if cache == nil || cache.ClusterID == "" {
		return standingOK, membership{}
	}
	id := d.mux.Identity()
	if id.Standalone() {
		return standingOK, membership{}
	}
	me := d.self()
	myEpoch := cache.Epoch
	if cl := d.fsm.Cluster(); cl != nil && cl.Epoch > myEpoch {
		myEpoch = cl.Epoch
	}
	myFP := id.Fingerprint
	answers := d.askPeers(ctx, cache.Members, myFP, timeout)
	if d.mux.Identity().Fingerprint != myFP {
		return standingOK, membership{} // the identity changed meanwhile: the answers are moot
	}
	for _, a := range answers {
		if a.ClusterID != cache.ClusterID {
			continue
		}
		switch {
		case a.Epoch > myEpoch && !a.Member:
			return standingRemoved, a
		case a.Epoch > myEpoch && a.Fenced:
			return standingFenced, a
		case a.Epoch == myEpoch && !a.Member && a.Applied >= me.JoinIndex && me.JoinIndex > 0:
			return standingRemoved, a
		}
	}
	return standingOK, membership{}
}

// askPeers asks every member but this node, in parallel on the join channel with each
// one's fingerprint pinned, how it sees the certificate fingerprint; it returns the
// answers of those that answered within timeout.
func (d *Daemon) askPeers(ctx context.Context, members []fsm.Member, fingerprint string, timeout time.Duration) []membership {
	me := d.self().CID
	var (
		mu  sync.Mutex
		out []membership
		wg  sync.WaitGroup
	)
	for _, m := range members {
		if m.CID == me {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			client, err := transport.PinnedHTTPClient(transport.ChanJoin, m.Fingerprint, timeout)
			if err != nil {
				return
			}
			defer client.CloseIdleConnections()
			var a membership
			if d.call(cctx, client, memberAddr(m), http.MethodPost, joinCheckPath, map[string]string{"fingerprint": fingerprint}, &a) == nil {
				mu.Lock()
				out = append(out, a)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return out
}

// checkStanding acts on askStanding: a removed or fenced node stops Raft and says why.
func (d *Daemon) checkStanding(ctx context.Context) {
	// A join or re-admission replaces the node's identity: asking with the old one would
	// make the peers disown it.
	if !d.createMu.TryLock() {
		return
	}
	defer d.createMu.Unlock()
	me := d.self()
	if me.Removed != "" || me.Fenced != nil || me.PendingEpoch != 0 {
		return
	}
	verdict, a := d.askStanding(ctx, d.cfg.RPCTimeout)
	d.applyStanding(verdict, a)
}

// applyStanding records a removal or fencing and stops Raft; it reports whether it did.
func (d *Daemon) applyStanding(verdict standing, a membership) bool {
	me := d.self()
	switch verdict {
	case standingRemoved:
		d.logger.Warn("this node was removed from the cluster; stopping raft", "cluster-id", a.ClusterID, "epoch", a.Epoch,
			"master-cid", a.MasterCID, "master-ip", a.MasterIP)
		me.Removed = a.ClusterID
	case standingFenced:
		d.logger.Warn("this node was superseded by a forced promotion; stopping raft",
			"cluster-id", a.ClusterID, "epoch", a.Epoch, "master-cid", a.MasterCID, "master-ip", a.MasterIP)
		me.Fenced = &fenceInfo{ClusterID: a.ClusterID, Epoch: a.Epoch, MasterCID: a.MasterCID, MasterName: a.MasterName, MasterIP: a.MasterIP}
	default:
		return false
	}
	if err := d.setSelf(me); err != nil {
		d.logger.Error("cannot record this node's standing", "error", err)
	}
	if n := d.rn(); n != nil {
		if err := n.Close(); err != nil {
			d.logger.Warn("stopping raft", "error", err)
		}
	}
	return true
}

// handleMembershipCheck answers how this node sees a certificate (joinCheckPath).
func (d *Daemon) handleMembershipCheck(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Fingerprint string `json:"fingerprint"`
	}
	if !decodeBody(w, r, &req) {
		return
	}
	out := membership{}
	me := d.self()
	if cl := d.fsm.Cluster(); cl != nil && me.Removed == "" && me.Fenced == nil {
		out.ClusterID, out.Epoch, out.Applied = cl.ID, cl.Epoch, d.fsm.AppliedIndex()
		m, ok := d.fsm.MemberByFingerprint(req.Fingerprint)
		out.Member, out.CID, out.Fenced = ok, m.CID, ok && m.Fenced(cl.Epoch)
		if master, ok := d.masterMember(); ok {
			out.MasterCID, out.MasterName, out.MasterIP = master.CID, master.Name, master.IP
		}
	}
	writeJSON(w, http.StatusOK, out)
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
