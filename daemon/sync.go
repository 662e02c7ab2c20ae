package daemon

import (
	"context"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/cluster"
	"github.com/pmgcm/pmgcm/fsm"
	"github.com/pmgcm/pmgcm/internal/version"
	"github.com/pmgcm/pmgcm/raftnode"
	"github.com/pmgcm/pmgcm/transport"
)

// syncer owns pmgcm sync: it brings this node in line with the master, and re-admits a
// node fenced by a forced promotion (asking the master, and, on the master, moving the
// fenced member into the current epoch).
type syncer struct {
	// writes commits commands and reads linearizably (rpc.go).
	writes *writer
	fsm    *fsm.FSM
	logger hclog.Logger
	// host is what sync and re-admission need of the rest of the daemon.
	host syncHost
	// members finds the master as a member.
	members *memberView
	// raft is this node's Raft node (Daemon.rn; made after the syncer).
	raft func() *raftnode.Node
	// peer and fwd are the cluster RPC client and the forwarder (made by openRPC).
	peer func() *cluster.Client
	fwd  func() *cluster.Forwarder
	// mux makes the join channel's client that carries this node's own certificate.
	mux *transport.Mux
	// peers is the membership this node trusts at the handshake (Daemon.peers).
	peers *atomic.Pointer[peerCache]
	// gate admits one identity-changing operation at a time (Daemon.gate).
	gate *opGate
	// turn serializes membership changes on the master (Daemon.memberTurn).
	turn *memberTurn
	// addr is this node's cluster address.
	addr         string
	electionWait time.Duration
	// voters is woken once a re-admitted member is in the configuration.
	voters *voterReconciler
	// joiner switches this node to the cluster's state on re-admission.
	joiner *joiner
}

// syncHost is what sync and re-admission need of the daemon.
type syncHost interface {
	standing() standing
	checkServing() error
}

// newSyncer returns the syncer of d, whose fsm and mux are made.
func newSyncer(d *Daemon) *syncer {
	return &syncer{
		writes: d.writes, fsm: d.fsm, logger: d.logger, host: d, members: d.members, raft: d.rn,
		peer: func() *cluster.Client { return d.peer }, fwd: func() *cluster.Forwarder { return d.fwd },
		mux: d.mux, peers: &d.peers, gate: &d.gate, turn: &d.memberTurn,
		addr: d.cfg.Addr(), electionWait: electionWait(d.cfg.Raft), voters: d.voters, joiner: d.joiner,
	}
}

// sync brings this node in line with the master: a healthy node catches up now; a node
// fenced by a forced promotion is re-admitted by the master at masterIP, with its CID,
// name and data kept and its stale Raft state dropped.
func (s *syncer) sync(ctx context.Context, masterIP string) (*api.SyncResponse, error) {
	switch st := s.host.standing(); st.kind {
	case standRemoved:
		return nil, st.err()
	case standFenced:
		if masterIP == "" {
			return nil, fmt.Errorf("%w; give the master's address: pmgcm sync --master_ip %s", st.err(), st.fence.MasterIP)
		}
		return s.readmit(ctx, masterIP, st.fence)
	}
	if s.fsm.Cluster() == nil {
		return nil, ErrNoCluster
	}
	if masterIP != "" {
		if net.ParseIP(masterIP) == nil {
			return nil, fmt.Errorf("%w: --master_ip %q is not an IP address", ErrBadRequest, masterIP)
		}
		wctx, cancel := context.WithTimeout(ctx, s.electionWait)
		_, err := s.fwd().WaitLeaderAddr(wctx)
		cancel()
		if err != nil {
			return nil, err
		}
		master, ok := s.members.master()
		if !ok {
			return nil, fmt.Errorf("%w: the master is not in this node's member list yet; try again", raftnode.ErrNoLeader)
		}
		if !net.ParseIP(master.IP).Equal(net.ParseIP(masterIP)) {
			return nil, fmt.Errorf("%w: %s is not the master: the master is cid %d (%s) at %s", ErrNotMaster, masterIP, master.CID, master.Name, master.IP)
		}
	}
	if err := s.writes.linearizableRead(ctx); err != nil {
		return nil, err
	}
	master, _ := s.members.master()
	return &api.SyncResponse{MasterCID: master.CID, Epoch: s.fsm.Cluster().Epoch, AppliedIndex: s.fsm.AppliedIndex()}, nil
}

// readmit asks the master at masterIP to take this fenced node back.
func (s *syncer) readmit(ctx context.Context, masterIP string, fence *fenceInfo) (*api.SyncResponse, error) {
	leave, err := s.gate.enter("pmgcm sync (re-admission)")
	if err != nil {
		return nil, err
	}
	defer leave()
	cache := s.peers.Load()
	var master fsm.Member
	for _, m := range cache.Members {
		if net.ParseIP(m.IP).Equal(net.ParseIP(masterIP)) {
			master = m
		}
	}
	if master.CID == 0 {
		return nil, fmt.Errorf("%w: no member of cluster %s has address %s: give the IP of the node that was promoted", fsm.ErrUnknownMember, cache.ClusterID, masterIP)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	// The join channel with this node's own certificate: the master knows it by it.
	client := s.mux.HTTPClient(transport.ChanJoin)
	defer client.CloseIdleConnections()
	adm, err := cluster.NewClient(client).JoinReadmit(ctx, memberAddr(master), version.Version, version.Level)
	if err != nil {
		return nil, err
	}
	if adm.ClusterID != cache.ClusterID || adm.Epoch < fence.Epoch {
		return nil, fmt.Errorf("%w: the node at %s answered for cluster %s epoch %d, this node belongs to cluster %s",
			ErrNotMaster, masterIP, adm.ClusterID, adm.Epoch, cache.ClusterID)
	}
	adm.CertPEM = nil // keep this node's certificate
	if err := s.joiner.becomeMember(adm); err != nil {
		return nil, fmt.Errorf("re-admitted as cid %d, but could not restart in the new epoch: %w; restart pmgclusterd to finish", adm.CID, err)
	}
	s.logger.Info("re-admitted after a forced promotion", "epoch", adm.Epoch, "master-cid", master.CID, "master-address", adm.MasterAddress)
	return &api.SyncResponse{Readmitted: true, MasterCID: master.CID, Epoch: adm.Epoch}, nil
}

// admitFencedBuild moves the fenced member with certificate req.Fingerprint, of the
// build req names, into the current epoch as a non-voter; the voter policy then
// promotes it once it has caught up.
func (s *syncer) admitFencedBuild(ctx context.Context, req cluster.ReadmitRequest) (*cluster.Admission, error) {
	fp := req.Fingerprint
	if err := s.host.checkServing(); err != nil {
		return nil, err
	}
	cl := s.fsm.Cluster()
	if cl == nil {
		return nil, ErrNoCluster
	}
	if _, ok := s.fsm.MemberByFingerprint(fp); !ok {
		return nil, unknownCertificate(cl)
	}
	return cluster.OnMaster(ctx, s.fwd(), func() (*cluster.Admission, error) { return s.readmitHere(ctx, req) },
		func() (*cluster.Admission, error) {
			var adm cluster.Admission
			return &adm, s.fwd().CallLeader(ctx, true, func(ctx context.Context, addr string) (err error) {
				adm, err = s.peer().Readmit(ctx, addr, req)
				return err
			})
		})
}

// unknownCertificate is the refusal of a re-admission by a certificate of no member.
func unknownCertificate(cl *fsm.Cluster) error {
	return fmt.Errorf("%w: this certificate belongs to no member of cluster %s: join the node again (pmgcm join)", fsm.ErrUnknownMember, cl.ID)
}

// readmitHere moves the fenced member with certificate req.Fingerprint into the current
// epoch, on this node, the master. A member whose build (req.Level; none is level 1) is
// below the cluster version is refused, as at a join (checkReadmitLevel): it could not
// read the log and snapshots it would be sent.
//
// It is idempotent: a member already in the current epoch (its earlier request went
// through but the answer was lost) gets the same answer again, and the voter policy
// adds it to Raft if it is not there yet.
func (s *syncer) readmitHere(ctx context.Context, req cluster.ReadmitRequest) (*cluster.Admission, error) {
	// Taken by the version duty too, while it raises the version.
	release, err := s.turn.take(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	cl := s.fsm.Cluster()
	m, ok := s.fsm.MemberByFingerprint(req.Fingerprint)
	if !ok {
		return nil, unknownCertificate(cl)
	}
	if err := checkReadmitLevel(s.fsm, m, req); err != nil {
		return nil, err
	}
	index := s.fsm.AppliedIndex()
	if m.Fenced(cl.Epoch) {
		m.Epoch, m.Suffrage = cl.Epoch, fsm.Nonvoter
		res, err := s.writes.applyLocal(ctx, &fsm.UpdateMember{Member: m})
		if err != nil {
			return nil, cluster.FirstProposal(err)
		}
		index = res.Index
		if err := s.raft().AddNonvoter(ctx, m.CID, memberAddr(m)); err != nil {
			return nil, fmt.Errorf("add cid %d to raft: %w", m.CID, err)
		}
		s.logger.Info("fenced node re-admitted", "cid", m.CID, "name", m.Name, "epoch", cl.Epoch)
	} else {
		s.logger.Info("fenced node asked again to be re-admitted: it is already", "cid", m.CID, "name", m.Name, "epoch", cl.Epoch)
	}
	s.voters.kick()
	return &cluster.Admission{ClusterID: cl.ID, Epoch: cl.Epoch, CID: m.CID, CACertPEM: cl.CACertPEM,
		Members: s.fsm.Members(), Index: index, MasterAddress: s.addr}, nil
}
