package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"

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

// peerTrust owns whom this node trusts at the TLS handshake: the peer cache (peers.json)
// kept in step with the state machine's membership, the member a certificate belongs to,
// and the authorizer of the cluster port (DESIGN safety rules 3 and 4).
type peerTrust struct {
	fsm    *fsm.FSM
	logger hclog.Logger
	dir    *dataDir
	// cache is the membership this node trusts at the handshake (Daemon.peers).
	cache *atomic.Pointer[peerCache]
	// self is this node's identity file (its standing, its admission).
	self func() nodeFile
	// waitApplied waits until the state machine applied an index (raftSlot.waitApplied).
	waitApplied func(ctx context.Context, index uint64) error
	// intake and standingW are refreshed and woken as the membership changes (made
	// after the trust: the mux it authorizes for comes first).
	intake    func() *intakePolicy
	standingW func() *standingWatch
}

// newPeerTrust returns the peer trust of d, whose data directory and fsm are made.
func newPeerTrust(d *Daemon) *peerTrust {
	return &peerTrust{
		fsm: d.fsm, logger: d.logger, dir: d.dir, cache: &d.peers, self: d.self, waitApplied: d.raft.waitApplied,
		intake: func() *intakePolicy { return d.intake }, standingW: func() *standingWatch { return d.standingW },
	}
}

func (p *peerTrust) path() string { return p.dir.file("peers.json") }

// loadPeers reads peers.json, if any.
func (p *peerTrust) load() error {
	b, err := readFileBounded(p.path(), maxPeersFileBytes)
	if errors.Is(err, os.ErrNotExist) {
		p.cache.Store(&peerCache{})
		return nil
	}
	if err != nil {
		return readErr(p.path(), err)
	}
	var pc peerCache
	if err := json.Unmarshal(b, &pc); err != nil {
		return corrupt(p.path(), err)
	}
	p.cache.Store(&pc)
	return nil
}

// storePeers writes p to peers.json and makes it the trusted membership.
func (p *peerTrust) store(pc *peerCache) error {
	b, err := json.MarshalIndent(pc, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(p.path(), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", p.path(), err)
	}
	p.cache.Store(pc)
	return nil
}

// follow keeps peers.json in step with the state machine's membership until ctx ends.
func (p *peerTrust) follow(ctx context.Context) {
	for {
		idx := p.fsm.AppliedIndex()
		p.refresh()
		p.intake().refresh()
		if p.listedNoMore() {
			p.standingW().kickNow() // the peers confirm it, and this node stops Raft
		}
		// Across Raft instances (a join replaces it; a removed or fenced node waits for
		// the next without spinning).
		if err := p.waitApplied(ctx, idx+1); err != nil {
			return // the daemon stops
		}
	}
}

// listedNoMore reports whether the local state machine, past this node's admission, no
// longer lists this node as a member of the current epoch (deleted, or fenced and
// learning of it from the log).
func (p *peerTrust) listedNoMore() bool {
	me := p.self()
	cl := p.fsm.Cluster()
	if cl == nil || !me.Joined || me.JoinIndex == 0 || p.fsm.AppliedIndex() < me.JoinIndex || !me.standing().talksToPeers() {
		return false
	}
	m, ok := p.fsm.Member(me.CID)
	return !ok || m.Fenced(cl.Epoch)
}

// refreshPeers stores the state machine's membership if it differs from the cache.
func (p *peerTrust) refresh() {
	cl := p.fsm.Cluster()
	if cl == nil {
		return
	}
	cur := p.cache.Load()
	if cur != nil && p.fsm.AppliedIndex() < cur.Index {
		return // still replaying: the cache is newer
	}
	next := &peerCache{Index: p.fsm.AppliedIndex(), ClusterID: cl.ID, Epoch: cl.Epoch, Members: p.fsm.Members()}
	if cur != nil && cur.ClusterID == next.ClusterID && cur.Epoch == next.Epoch && slices.Equal(cur.Members, next.Members) {
		return
	}
	if err := p.store(next); err != nil {
		p.logger.Error("cannot save the member list", "error", err)
	}
}

// trustedMember returns the member whose certificate has fingerprint and the epoch in
// force, by the state machine once it has caught up with the cache, by the cache before.
//
// It may run before the cache is loaded (the mux accepts connections before Open reads
// peers.json): with no cache and no cluster in the state machine, nobody is trusted.
func (p *peerTrust) trustedMember(fingerprint string) (fsm.Member, uint64, bool) {
	cache := p.cache.Load()
	if cl := p.fsm.Cluster(); cl != nil && (cache == nil || p.fsm.AppliedIndex() >= cache.Index) {
		m, ok := p.fsm.MemberByFingerprint(fingerprint)
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
func (p *peerTrust) authorize(ch transport.Channel, fingerprint string) error {
	joinOnly := ch == transport.ChanAny || ch == transport.ChanJoin
	if !p.self().standing().talksToPeers() {
		if joinOnly {
			return nil
		}
		return fmt.Errorf("%w: this node takes no part in the cluster now", transport.ErrPeerRefused)
	}
	// Never waits: it runs inside the TLS handshake. A member that just renewed its
	// certificate and reaches this node before this node applied the entry that
	// published it is refused, and retries (rotate.go).
	m, epoch, ok := p.trustedMember(fingerprint)
	if !ok {
		return fmt.Errorf("%w: certificate %s is not a member of this cluster", transport.ErrPeerRefused, fingerprint)
	}
	if m.Fenced(epoch) && !joinOnly {
		// The refusal tells the fenced node the epoch: it learns where it stands from
		// the first connection refused to it (DESIGN safety rule 3).
		return fmt.Errorf("cid %d (%s, %s) is fenced: it was left in epoch %d: %w", m.CID, m.Name, memberAddr(m), m.Epoch,
			&transport.Refusal{ClusterID: p.knownCluster(), Epoch: epoch, Reason: "fenced by a forced promotion"})
	}
	return nil
}

// knownCluster returns the ID of the cluster this node belongs to: by the state machine,
// or, while the log is still being replayed after a start, by the member cache. Empty on
// a standalone node.
func (p *peerTrust) knownCluster() string {
	if cl := p.fsm.Cluster(); cl != nil {
		return cl.ID
	}
	if pc := p.cache.Load(); pc != nil {
		return pc.ClusterID
	}
	return ""
}
