package daemon

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/cluster"
	"github.com/pmgcm/pmgcm/fsm"
	"github.com/pmgcm/pmgcm/raftnode"
	"github.com/pmgcm/pmgcm/transport"
)

// admitter owns admission: it checks a join request and, on the master, records the
// joining node as a member and adds it to Raft as a non-voter; elsewhere it relays the
// request to the master, and finds out what happened to one whose answer was lost.
type admitter struct {
	fsm    *fsm.FSM
	logger hclog.Logger
	// writes commits the new member and reads linearizably (rpc.go).
	writes *writer
	// turn serializes membership changes on the master (Daemon.memberTurn).
	turn     *memberTurn
	versions *versionKeeper
	voters   *voterReconciler
	// limits holds the join throttle (joinTokens).
	limits *listenerLimits
	// joiner knows the protocol version this node speaks.
	joiner *joiner
	// raft is this node's Raft node (Daemon.rn; made after the admitter).
	raft func() *raftnode.Node
	// peer and fwd are the cluster RPC client and the forwarder (made by openRPC).
	peer func() *cluster.Client
	fwd  func() *cluster.Forwarder
	// addr is this node's cluster address.
	addr string
	// checkServing refuses while this node is removed or fenced (Daemon.checkServing).
	checkServing func() error
}

// newAdmitter returns the admitter of d, whose fsm, write path, limits, version keeper,
// voter reconciler and joiner are made.
func newAdmitter(d *Daemon) *admitter {
	return &admitter{
		fsm: d.fsm, logger: d.logger, writes: d.writes, turn: &d.memberTurn, versions: d.versions, voters: d.voters,
		limits: d.limits, joiner: d.joiner, raft: d.rn,
		peer: func() *cluster.Client { return d.peer }, fwd: func() *cluster.Forwarder { return d.fwd },
		addr: d.cfg.Addr(), checkServing: d.checkServing,
	}
}

// admit checks a join request and, on the master, records the node as a member and adds
// it to Raft as a non-voter. Any refusal changes nothing.
func (a *admitter) admit(ctx context.Context, req cluster.AdmitRequest, relay bool) (*cluster.Admission, error) {
	if err := a.checkServing(); err != nil {
		return nil, err
	}
	cl := a.fsm.Cluster()
	if cl == nil {
		return nil, fmt.Errorf("%w: the node at %s is in no cluster: run pmgcm create there first", ErrNoCluster, a.addr)
	}
	if _, err := cluster.CheckCompatible(a.joiner.protocolRange(),
		cluster.PeerRange(req.ProtocolVersion, req.ProtocolMin, req.ProtocolMax), a.joiner.protocolVersion(), req.StateFormat); err != nil {
		return nil, err
	}
	src, fromJoin := joinSource(ctx)
	if relay && fromJoin {
		if err := a.limits.joinTokens.check(src); err != nil {
			return nil, err
		}
	}
	adm, err := cluster.OnMaster(ctx, a.fwd(), func() (*cluster.Admission, error) { return a.admitHere(ctx, req) },
		func() (*cluster.Admission, error) {
			if !relay {
				return nil, a.raft().NotLeader()
			}
			return a.forwardAdmit(ctx, req)
		})
	if relay && fromJoin {
		switch {
		case err == nil:
			a.limits.joinTokens.succeeded(src)
		case errors.Is(err, ErrBadToken) || cluster.Code(err) == api.CodeBadToken:
			a.limits.joinTokens.failed(src)
		}
	}
	return adm, err
}

// forwardAdmit sends a join request to the master. If the master took it but the answer
// was lost (it stopped, crashed or was deposed), this node waits for a master that
// answers and looks whether the node was admitted meanwhile: if not, it asks again
// (nothing was changed); if so, the node never got its certificate, and the operator is
// told how to clear the record.
func (a *admitter) forwardAdmit(ctx context.Context, req cluster.AdmitRequest) (*cluster.Admission, error) {
	var adm cluster.Admission
	send := func(ctx context.Context, addr string) (err error) {
		adm, err = a.peer().Admit(ctx, addr, req)
		return err
	}
	err := a.fwd().CallLeader(ctx, false, send)
	if !cluster.UnknownOutcome(err) {
		return &adm, err
	}
	a.logger.Warn("the master did not answer a join request; checking whether it admitted the node",
		"name", req.Name, "ip", req.IP, "error", err)
	if err := a.checkNotAdmitted(ctx, req, err); err != nil {
		return nil, err
	}
	adm = cluster.Admission{}
	if err2 := a.fwd().CallLeader(ctx, false, send); err2 != nil {
		if cluster.UnknownOutcome(err2) || cluster.Code(err2) == api.CodeMemberExists {
			// The first request went through after all, or this one may have.
			if cerr := a.checkNotAdmitted(ctx, req, err2); cerr != nil {
				return nil, cerr
			}
		}
		return &adm, err2
	}
	return &adm, nil
}

// checkNotAdmitted reads the member list as of now (linearizably) and fails if it holds
// the joining node: admitted by a request whose answer was lost (cause).
func (a *admitter) checkNotAdmitted(ctx context.Context, req cluster.AdmitRequest, cause error) error {
	if err := a.writes.linearizableRead(ctx); err != nil {
		return fmt.Errorf("%w; no master answered since: %v", cause, err)
	}
	for _, m := range a.fsm.Members() {
		if strings.EqualFold(m.Name, req.Name) && net.ParseIP(m.IP).Equal(net.ParseIP(req.IP)) {
			return fmt.Errorf("%w: the master admitted this node as cid %d, but its answer was lost, so this node never got its certificate: remove the record with pmgcm delete %d on a member, then join again",
				raftnode.ErrUnknownOutcome, m.CID, m.CID)
		}
	}
	return nil
}

// memberClash refuses a joining node whose name or address a member has already, by
// the state machine's own rule (fsm.Conflict: names compare case-insensitively).
func memberClash(members []fsm.Member, name, ip string) error {
	for _, m := range members {
		if why := fsm.Conflict(fsm.Member{Name: name, IP: ip}, m); why != "" {
			return fmt.Errorf("%w: %s: cid %d is already %s at %s: pick another --name/--ip, or delete cid %d first (pmgcm delete %d)",
				fsm.ErrMemberExists, why, m.CID, m.Name, m.IP, m.CID, m.CID)
		}
	}
	return nil
}

// admitHere admits a joining node on this node, the master.
func (a *admitter) admitHere(ctx context.Context, req cluster.AdmitRequest) (*cluster.Admission, error) {
	release, err := a.turn.take(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	cl := a.fsm.Cluster()
	if err := a.versions.checkJoinLevel(req); err != nil {
		return nil, err
	}
	if err := checkJoinToken(cl, req.Token, time.Now()); err != nil {
		// Logged, rate-limited, by the join throttle of the node the caller reached.
		return nil, err
	}
	if err := memberClash(a.fsm.Members(), req.Name, req.IP); err != nil {
		return nil, err
	}
	block, _ := pem.Decode(req.PublicKeyPEM)
	if block == nil {
		return nil, fmt.Errorf("%w: no public key in the join request", ErrBadRequest)
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: public key: %v", ErrBadRequest, err)
	}
	ca, err := transport.ParseCA(cl.CACertPEM, cl.CAKeyPEM)
	if err != nil {
		return nil, err
	}
	certPEM, err := ca.IssueNodeCert(pub, req.Name, net.ParseIP(req.IP), nodeCertValidity)
	if err != nil {
		return nil, err
	}
	fp, err := certFingerprint(certPEM)
	if err != nil {
		return nil, err
	}
	cid := cl.NextCID
	addr := net.JoinHostPort(req.IP, strconv.Itoa(req.Port))
	res, err := a.writes.applyLocal(ctx, &fsm.AddMember{Member: fsm.Member{
		CID: cid, Name: req.Name, IP: req.IP, Port: req.Port, Fingerprint: fp,
		Suffrage: fsm.Nonvoter, JoinedAt: time.Now().UTC(),
	}})
	if err != nil {
		return nil, cluster.FirstProposal(err)
	}
	if err := a.raft().AddNonvoter(ctx, cid, addr); err != nil {
		// The node is a member from the commit above on: answer it, so that it gets its
		// certificate. The voter policy adds a member missing from Raft (on whichever
		// node is master by then).
		a.logger.Warn("admitted node not added to raft yet; the voter policy will", "cid", cid, "address", addr, "error", err)
	}
	a.logger.Info("node admitted", "cid", cid, "name", req.Name, "address", addr)
	a.voters.kick()
	return &cluster.Admission{ClusterID: cl.ID, Epoch: cl.Epoch, CID: cid, CertPEM: certPEM, CACertPEM: cl.CACertPEM,
		Members: a.fsm.Members(), Index: res.Index, MasterAddress: a.addr}, nil
}
