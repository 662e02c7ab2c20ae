package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"

	"github.com/pmgcm/pmgcm/fsm"
	"github.com/pmgcm/pmgcm/transport"
)

// peerCache is the membership this node trusts at the TLS handshake, kept in peers.json.
//
// The state machine is the truth, but after a restart it is rebuilt only as Raft replays
// the log, which for a follower starts when the leader reaches it: the leader's own
// connection must be admitted before that. So the daemon writes the members to
// peers.json each time they change, and until the state machine has caught up with the
// cache's index the cache decides. A joining node seeds it from the master's answer.
type peerCache struct {
	// Index is the state-machine index the cache was taken at.
	Index     uint64       `json:"index"`
	ClusterID string       `json:"cluster_id"`
	Epoch     uint64       `json:"epoch"`
	Members   []fsm.Member `json:"members"`
}

func (p *peerCache) member(fingerprint string) (fsm.Member, bool) {
	if p == nil {
		return fsm.Member{}, false
	}
	for _, m := range p.Members {
		if m.Fingerprint == fingerprint {
			return m, true
		}
	}
	return fsm.Member{}, false
}

func (d *Daemon) peersPath() string { return d.dir.file("peers.json") }

// loadPeers reads peers.json, if any.
func (d *Daemon) loadPeers() error {
	b, err := readFileBounded(d.peersPath(), maxPeersFileBytes)
	if errors.Is(err, os.ErrNotExist) {
		d.peers.Store(&peerCache{})
		return nil
	}
	if err != nil {
		return readErr(d.peersPath(), err)
	}
	var p peerCache
	if err := json.Unmarshal(b, &p); err != nil {
		return corrupt(d.peersPath(), err)
	}
	d.peers.Store(&p)
	return nil
}

// storePeers writes p to peers.json and makes it the trusted membership.
func (d *Daemon) storePeers(p *peerCache) error {
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(d.peersPath(), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", d.peersPath(), err)
	}
	d.peers.Store(p)
	return nil
}

// followPeers keeps peers.json in step with the state machine's membership.
func (d *Daemon) followPeers() {
	defer d.bg.Done()
	ctx, cancel := d.stopContext()
	defer cancel()
	for {
		idx := d.fsm.AppliedIndex()
		d.refreshPeers()
		d.refreshIntake()
		if d.listedNoMore() {
			d.standingW.kickNow() // the peers confirm it, and this node stops Raft
		}
		// Across Raft instances (a join replaces it; a removed or fenced node waits for
		// the next without spinning).
		if err := d.waitApplied(ctx, idx+1); err != nil {
			return // the daemon stops
		}
	}
}

// listedNoMore reports whether the local state machine, past this node's admission, no
// longer lists this node as a member of the current epoch (deleted, or fenced and
// learning of it from the log).
func (d *Daemon) listedNoMore() bool {
	me := d.self()
	cl := d.fsm.Cluster()
	if cl == nil || !me.Joined || me.JoinIndex == 0 || d.fsm.AppliedIndex() < me.JoinIndex || !me.standing().talksToPeers() {
		return false
	}
	m, ok := d.fsm.Member(me.CID)
	return !ok || m.Fenced(cl.Epoch)
}

// refreshPeers stores the state machine's membership if it differs from the cache.
func (d *Daemon) refreshPeers() {
	cl := d.fsm.Cluster()
	if cl == nil {
		return
	}
	cur := d.peers.Load()
	if cur != nil && d.fsm.AppliedIndex() < cur.Index {
		return // still replaying: the cache is newer
	}
	next := &peerCache{Index: d.fsm.AppliedIndex(), ClusterID: cl.ID, Epoch: cl.Epoch, Members: d.fsm.Members()}
	if cur != nil && cur.ClusterID == next.ClusterID && cur.Epoch == next.Epoch && slices.Equal(cur.Members, next.Members) {
		return
	}
	if err := d.storePeers(next); err != nil {
		d.logger.Error("cannot save the member list", "error", err)
	}
}

// trustedMember returns the member whose certificate has fingerprint and the epoch in
// force, by the state machine once it has caught up with the cache, by the cache before.
//
// It may run before the cache is loaded (the mux accepts connections before Open reads
// peers.json): with no cache and no cluster in the state machine, nobody is trusted.
func (d *Daemon) trustedMember(fingerprint string) (fsm.Member, uint64, bool) {
	cache := d.peers.Load()
	if cl := d.fsm.Cluster(); cl != nil && (cache == nil || d.fsm.AppliedIndex() >= cache.Index) {
		m, ok := d.fsm.MemberByFingerprint(fingerprint)
		return m, cl.Epoch, ok
	}
	if cache == nil {
		return fsm.Member{}, 0, false
	}
	m, ok := cache.member(fingerprint)
	return m, cache.Epoch, ok
}

// authorizePeer admits a peer whose CA-verified certificate belongs to a current member
// (DESIGN safety rules 3 and 4). A deleted node is refused at the handshake. A member
// fenced by a forced promotion passes the handshake but may open only the join channel,
// where it learns why and asks to be re-admitted; Raft and RPC from it are refused. A node
// that is itself removed, fenced or in the middle of a forced promotion talks to nobody
// but on the join channel.
func (d *Daemon) authorizePeer(ch transport.Channel, fingerprint string) error {
	joinOnly := ch == transport.ChanAny || ch == transport.ChanJoin
	if !d.standing().talksToPeers() {
		if joinOnly {
			return nil
		}
		return fmt.Errorf("%w: this node takes no part in the cluster now", transport.ErrPeerRefused)
	}
	// Never waits: it runs inside the TLS handshake. A member that just renewed its
	// certificate and reaches this node before this node applied the entry that
	// published it is refused, and retries (rotate.go).
	m, epoch, ok := d.trustedMember(fingerprint)
	if !ok {
		return fmt.Errorf("%w: certificate %s is not a member of this cluster", transport.ErrPeerRefused, fingerprint)
	}
	if m.Fenced(epoch) && !joinOnly {
		// The refusal tells the fenced node the epoch: it learns where it stands from
		// the first connection refused to it (DESIGN safety rule 3).
		return fmt.Errorf("cid %d (%s, %s) is fenced: it was left in epoch %d: %w", m.CID, m.Name, memberAddr(m), m.Epoch,
			&transport.Refusal{ClusterID: d.knownCluster(), Epoch: epoch, Reason: "fenced by a forced promotion"})
	}
	return nil
}

// stopContext returns a context that ends when the daemon closes.
func (d *Daemon) stopContext() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-d.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// knownCluster returns the ID of the cluster this node belongs to: by the state machine,
// or, while the log is still being replayed after a start, by the member cache. Empty on
// a standalone node.
func (d *Daemon) knownCluster() string {
	if cl := d.fsm.Cluster(); cl != nil {
		return cl.ID
	}
	if p := d.peers.Load(); p != nil {
		return p.ClusterID
	}
	return ""
}
