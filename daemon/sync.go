package daemon

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/cluster"
	"github.com/pmgcm/pmgcm/fsm"
	"github.com/pmgcm/pmgcm/raftnode"
	"github.com/pmgcm/pmgcm/transport"
)

// sync brings this node in line with the master: a healthy node catches up now; a node
// fenced by a forced promotion is re-admitted by the master at masterIP, with its CID,
// name and data kept and its stale Raft state dropped.
func (d *Daemon) sync(ctx context.Context, masterIP string) (*api.SyncResponse, error) {
	switch st := d.standing(); st.kind {
	case standRemoved:
		return nil, st.err()
	case standFenced:
		if masterIP == "" {
			return nil, fmt.Errorf("%w; give the master's address: pmgcm sync --master_ip %s", st.err(), st.fence.MasterIP)
		}
		return d.readmit(ctx, masterIP, st.fence)
	}
	if d.fsm.Cluster() == nil {
		return nil, ErrNoCluster
	}
	if masterIP != "" {
		if net.ParseIP(masterIP) == nil {
			return nil, fmt.Errorf("%w: --master_ip %q is not an IP address", ErrBadRequest, masterIP)
		}
		wctx, cancel := context.WithTimeout(ctx, d.electionWait())
		_, err := d.fwd.WaitLeaderAddr(wctx)
		cancel()
		if err != nil {
			return nil, err
		}
		master, ok := d.masterMember()
		if !ok {
			return nil, fmt.Errorf("%w: the master is not in this node's member list yet; try again", raftnode.ErrNoLeader)
		}
		if !net.ParseIP(master.IP).Equal(net.ParseIP(masterIP)) {
			return nil, fmt.Errorf("%w: %s is not the master: the master is cid %d (%s) at %s", ErrNotMaster, masterIP, master.CID, master.Name, master.IP)
		}
	}
	if err := d.linearizableRead(ctx); err != nil {
		return nil, err
	}
	master, _ := d.masterMember()
	return &api.SyncResponse{MasterCID: master.CID, Epoch: d.fsm.Cluster().Epoch, AppliedIndex: d.fsm.AppliedIndex()}, nil
}

// readmit asks the master at masterIP to take this fenced node back.
func (d *Daemon) readmit(ctx context.Context, masterIP string, fence *fenceInfo) (*api.SyncResponse, error) {
	leave, err := d.gate.enter("pmgcm sync (re-admission)")
	if err != nil {
		return nil, err
	}
	defer leave()
	cache := d.peers.Load()
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
	client := d.mux.HTTPClient(transport.ChanJoin)
	defer client.CloseIdleConnections()
	adm, err := cluster.NewClient(client).JoinReadmit(ctx, memberAddr(master))
	if err != nil {
		return nil, err
	}
	if adm.ClusterID != cache.ClusterID || adm.Epoch < fence.Epoch {
		return nil, fmt.Errorf("%w: the node at %s answered for cluster %s epoch %d, this node belongs to cluster %s",
			ErrNotMaster, masterIP, adm.ClusterID, adm.Epoch, cache.ClusterID)
	}
	adm.CertPEM = nil // keep this node's certificate
	if err := d.becomeMember(adm); err != nil {
		return nil, fmt.Errorf("re-admitted as cid %d, but could not restart in the new epoch: %w; restart pmgclusterd to finish", adm.CID, err)
	}
	d.logger.Info("re-admitted after a forced promotion", "epoch", adm.Epoch, "master-cid", master.CID, "master-address", adm.MasterAddress)
	return &api.SyncResponse{Readmitted: true, MasterCID: master.CID, Epoch: adm.Epoch}, nil
}

// admitFenced moves the fenced member with certificate fp into the current epoch as a
// non-voter; the voter policy then promotes it once it has caught up.
func (d *Daemon) admitFenced(ctx context.Context, fp string) (*cluster.Admission, error) {
	if err := d.checkServing(); err != nil {
		return nil, err
	}
	cl := d.fsm.Cluster()
	if cl == nil {
		return nil, ErrNoCluster
	}
	if _, ok := d.fsm.MemberByFingerprint(fp); !ok {
		return nil, unknownCertificate(cl)
	}
	return cluster.OnMaster(ctx, d.fwd, func() (*cluster.Admission, error) { return d.readmitHere(ctx, fp) },
		func() (*cluster.Admission, error) {
			var adm cluster.Admission
			return &adm, d.fwd.CallLeader(ctx, true, func(ctx context.Context, addr string) (err error) {
				adm, err = d.peer.Readmit(ctx, addr, fp)
				return err
			})
		})
}

// unknownCertificate is the refusal of a re-admission by a certificate of no member.
func unknownCertificate(cl *fsm.Cluster) error {
	return fmt.Errorf("%w: this certificate belongs to no member of cluster %s: join the node again (pmgcm join)", fsm.ErrUnknownMember, cl.ID)
}

// readmitHere moves the fenced member with certificate fp into the current epoch, on
// this node, the master.
//
// It is idempotent: a member already in the current epoch (its earlier request went
// through but the answer was lost) gets the same answer again, and the voter policy
// adds it to Raft if it is not there yet.
func (d *Daemon) readmitHere(ctx context.Context, fp string) (*cluster.Admission, error) {
	d.memberMu.Lock()
	defer d.memberMu.Unlock()
	cl := d.fsm.Cluster()
	m, ok := d.fsm.MemberByFingerprint(fp)
	if !ok {
		return nil, unknownCertificate(cl)
	}
	index := d.fsm.AppliedIndex()
	if m.Fenced(cl.Epoch) {
		m.Epoch, m.Suffrage = cl.Epoch, fsm.Nonvoter
		res, err := d.applyLocal(ctx, &fsm.UpdateMember{Member: m})
		if err != nil {
			return nil, cluster.FirstProposal(err)
		}
		index = res.Index
		if err := d.rn().AddNonvoter(ctx, m.CID, memberAddr(m)); err != nil {
			return nil, fmt.Errorf("add cid %d to raft: %w", m.CID, err)
		}
		d.logger.Info("fenced node re-admitted", "cid", m.CID, "name", m.Name, "epoch", cl.Epoch)
	} else {
		d.logger.Info("fenced node asked again to be re-admitted: it is already", "cid", m.CID, "name", m.Name, "epoch", cl.Epoch)
	}
	d.kickLeaderDuties()
	return &cluster.Admission{ClusterID: cl.ID, Epoch: cl.Epoch, CID: m.CID, CACertPEM: cl.CACertPEM,
		Members: d.fsm.Members(), Index: index, MasterAddress: d.cfg.Addr()}, nil
}
