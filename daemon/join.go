package daemon

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/cluster"
	"github.com/pmgcm/pmgcm/fsm"
	"github.com/pmgcm/pmgcm/internal/version"
	"github.com/pmgcm/pmgcm/raftnode"
	"github.com/pmgcm/pmgcm/transport"
)

// masterAddr turns the operator's "ip" or "ip:port" into an address; the port defaults
// to this node's own cluster port.
func (d *Daemon) masterAddr(master string) (string, error) {
	host, port := master, strconv.Itoa(d.cfg.Port)
	if h, p, err := net.SplitHostPort(master); err == nil {
		host, port = h, p
	}
	if net.ParseIP(host) == nil {
		return "", fmt.Errorf("%w: %q is not an IP address (give the master's IP, optionally with :port)", ErrBadRequest, master)
	}
	return net.JoinHostPort(host, port), nil
}

// joinDialTimeout bounds reaching the master, so that an unreachable one is reported
// within seconds.
const joinDialTimeout = 5 * time.Second

// probe contacts master on the join channel, trusting whatever it presents, and reports
// its fingerprint so that the operator can check it.
func (d *Daemon) probe(ctx context.Context, master string) (*api.JoinProbe, error) {
	addr, err := d.masterAddr(master)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, joinDialTimeout)
	defer cancel()
	jc, fp, err := cluster.DialJoin(ctx, net.ParseIP(d.cfg.IP), addr, "", joinDialTimeout)
	if err != nil {
		return nil, unreachable(addr, err)
	}
	defer jc.CloseIdleConnections()
	info, err := jc.JoinInfo(ctx, addr)
	if err != nil {
		return nil, err
	}
	return &api.JoinProbe{Address: addr, Fingerprint: fp, ClusterID: info.ClusterID, Name: info.Name, CID: info.CID,
		ProtocolVersion: info.ProtocolVersion, StateFormat: info.StateFormat}, nil
}

func unreachable(addr string, err error) error {
	if errors.Is(err, transport.ErrFingerprintMismatch) {
		return fmt.Errorf("the node at %s: %w: it is not the master you meant, or its certificate changed; check with pmgcm join-cmd on a member", addr, err)
	}
	return &cluster.RemoteError{Status: http.StatusBadGateway, E: api.Error{
		Code:    api.CodeUnreachable,
		Message: fmt.Sprintf("cannot reach the master at %s: %v", addr, cluster.UnwrapURLError(err)),
		Hint:    "check the address and port, and that pmgclusterd runs there and the network lets this node reach it",
	}}
}

// join makes this standalone node a member of master's cluster. Nothing changes on
// either side until the master admits the node; then the node's own state is replaced.
func (d *Daemon) join(ctx context.Context, req api.JoinRequest) (*api.JoinResponse, error) {
	leave, err := d.gate.enter("pmgcm join")
	if err != nil {
		return nil, err
	}
	defer leave()
	// A node removed from its cluster may join again (with a new CID).
	if id := d.knownCluster(); id != "" && d.standing().kind != standRemoved {
		return nil, fmt.Errorf("%w: cluster %s, this node is cid %d; nothing was changed (to move it to another cluster, delete it there first and remove its data directory)",
			ErrClusterExists, id, d.self().CID)
	}
	addr, err := d.masterAddr(req.Master)
	if err != nil {
		return nil, err
	}
	fp, err := transport.NormalizeFingerprint(req.Fingerprint)
	if err != nil {
		return nil, err
	}
	ictx, cancel := context.WithTimeout(ctx, joinDialTimeout)
	defer cancel()
	jc, _, err := cluster.DialJoin(ictx, net.ParseIP(d.cfg.IP), addr, fp, joinDialTimeout)
	if err != nil {
		return nil, unreachable(addr, err)
	}
	defer jc.CloseIdleConnections()
	info, err := jc.JoinInfo(ictx, addr)
	if err != nil {
		return nil, err
	}
	speak, err := cluster.CheckCompatible(d.protocolRange(),
		cluster.PeerRange(info.ProtocolVersion, info.ProtocolMin, info.ProtocolMax), info.ProtocolVersion, info.StateFormat)
	if err != nil {
		return nil, fmt.Errorf("%w (the node at %s)", err, addr)
	}
	keyPEM, err := d.dir.keyPEM()
	if err != nil {
		return nil, err
	}
	key, err := transport.ParseKey(keyPEM)
	if err != nil {
		return nil, err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return nil, err
	}
	me := d.self()
	areq := cluster.AdmitRequest{
		Token: req.Token, Name: me.Name, IP: me.IP, Port: me.Port,
		PublicKeyPEM:    pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}),
		ProtocolVersion: speak, StateFormat: StateFormat, // a first-release master takes exactly 2
		ProtocolMin: d.protocolRange().Min, ProtocolMax: d.protocolRange().Max,
		Version: version.Version, Level: version.Level,
	}
	actx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	adm, err := jc.JoinAdmit(actx, addr, areq)
	if err != nil {
		return nil, err
	}
	d.speaking.Store(int32(speak))
	if err := d.becomeMember(adm); err != nil {
		return nil, fmt.Errorf("the cluster admitted this node as cid %d, but it could not switch to the cluster's state: %w; restart pmgclusterd to finish the join", adm.CID, err)
	}
	d.logger.Info("joined cluster", "cluster-id", adm.ClusterID, "cid", adm.CID, "master", adm.MasterAddress)
	return &api.JoinResponse{ClusterID: adm.ClusterID, CID: adm.CID, Name: me.Name, MasterAddress: adm.MasterAddress}, nil
}

// becomeMember replaces this node's state with the cluster's: the admitted certificate
// and CID, an empty Raft log that the master fills, and the master's member list as the
// trusted peers until then. Each step is durable before the next, and WipeRaft in
// node.json makes a restart finish an interrupted switch.
func (d *Daemon) becomeMember(adm cluster.Admission) error {
	keyPEM, err := d.dir.keyPEM()
	if err != nil {
		return err
	}
	certPEM := adm.CertPEM
	if len(certPEM) == 0 { // re-admission: the node keeps its certificate
		if certPEM, err = readFileBounded(d.dir.file("tls", certFile), maxTLSFileBytes); err != nil {
			return err
		}
	}
	id, err := transport.NewIdentity(certPEM, keyPEM, adm.CACertPEM)
	if err != nil {
		return fmt.Errorf("certificate from the master: %w", err)
	}
	if err := d.dir.writePendingIdentity(certPEM, adm.CACertPEM); err != nil {
		return err
	}
	if err := d.dir.commitPendingIdentity(); err != nil {
		return err
	}
	d.mux.SetIdentity(id)
	if err := d.storePeers(&peerCache{Index: adm.Index, ClusterID: adm.ClusterID, Epoch: adm.Epoch, Members: adm.Members}); err != nil {
		return err
	}
	if err := d.updateSelf(func(nf *nodeFile) {
		*nf = nf.withStanding(standing{kind: standMember})
		nf.CID, nf.Joined, nf.WipeRaft, nf.JoinIndex = adm.CID, true, true, adm.Index
	}); err != nil {
		return err
	}
	// Raft restarts in place as the cluster's cid, its own state replaced.
	return d.rn().Restart(raftnode.RestartOptions{LocalID: raftnode.ServerID(adm.CID), Prepare: func(string) error {
		if len(adm.CertPEM) > 0 {
			// A join replaces the node's data with the cluster's; a re-admission after a
			// forced promotion keeps it.
			if err := d.wipeMail(); err != nil {
				return err
			}
		}
		return d.wipeRaft()
	}})
}

// wipeRaft removes the node's Raft state and clears WipeRaft.
func (d *Daemon) wipeRaft() error {
	if err := os.RemoveAll(d.dir.file("raft")); err != nil {
		return fmt.Errorf("remove %s: %w", d.dir.file("raft"), err)
	}
	return d.updateSelf(func(nf *nodeFile) { nf.WipeRaft = false })
}

// joinInfo says who this node is, for a joining node (cluster.JoinPathInfo).
func (d *Daemon) joinInfo() cluster.JoinInfo {
	me := d.self()
	r := d.protocolRange()
	info := cluster.JoinInfo{Name: me.Name, CID: me.CID, ProtocolVersion: d.protocolVersion(), StateFormat: StateFormat,
		ProtocolMin: r.Min, ProtocolMax: r.Max}
	if cl := d.fsm.Cluster(); cl != nil {
		info.ClusterID = cl.ID
	}
	return info
}

// admit checks a join request and, on the master, records the node as a member and adds
// it to Raft as a non-voter. Any refusal changes nothing.
func (d *Daemon) admit(ctx context.Context, req cluster.AdmitRequest, relay bool) (*cluster.Admission, error) {
	if err := d.checkServing(); err != nil {
		return nil, err
	}
	cl := d.fsm.Cluster()
	if cl == nil {
		return nil, fmt.Errorf("%w: the node at %s is in no cluster: run pmgcm create there first", ErrNoCluster, d.cfg.Addr())
	}
	if _, err := cluster.CheckCompatible(d.protocolRange(),
		cluster.PeerRange(req.ProtocolVersion, req.ProtocolMin, req.ProtocolMax), d.protocolVersion(), req.StateFormat); err != nil {
		return nil, err
	}
	src, fromJoin := joinSource(ctx)
	if relay && fromJoin {
		if err := d.limits.joinTokens.check(src); err != nil {
			return nil, err
		}
	}
	adm, err := cluster.OnMaster(ctx, d.fwd, func() (*cluster.Admission, error) { return d.admitHere(ctx, req) },
		func() (*cluster.Admission, error) {
			if !relay {
				return nil, d.rn().NotLeader()
			}
			return d.forwardAdmit(ctx, req)
		})
	if relay && fromJoin {
		switch {
		case err == nil:
			d.limits.joinTokens.succeeded(src)
		case errors.Is(err, ErrBadToken) || cluster.Code(err) == api.CodeBadToken:
			d.limits.joinTokens.failed(src)
		}
	}
	return adm, err
}

// forwardAdmit sends a join request to the master. If the master took it but the answer
// was lost (it stopped, crashed or was deposed), this node waits for a master that
// answers and looks whether the node was admitted meanwhile: if not, it asks again
// (nothing was changed); if so, the node never got its certificate, and the operator is
// told how to clear the record.
func (d *Daemon) forwardAdmit(ctx context.Context, req cluster.AdmitRequest) (*cluster.Admission, error) {
	var adm cluster.Admission
	send := func(ctx context.Context, addr string) (err error) {
		adm, err = d.peer.Admit(ctx, addr, req)
		return err
	}
	err := d.fwd.CallLeader(ctx, false, send)
	if !cluster.UnknownOutcome(err) {
		return &adm, err
	}
	d.logger.Warn("the master did not answer a join request; checking whether it admitted the node",
		"name", req.Name, "ip", req.IP, "error", err)
	if err := d.checkNotAdmitted(ctx, req, err); err != nil {
		return nil, err
	}
	adm = cluster.Admission{}
	if err2 := d.fwd.CallLeader(ctx, false, send); err2 != nil {
		if cluster.UnknownOutcome(err2) || cluster.Code(err2) == api.CodeMemberExists {
			// The first request went through after all, or this one may have.
			if cerr := d.checkNotAdmitted(ctx, req, err2); cerr != nil {
				return nil, cerr
			}
		}
		return &adm, err2
	}
	return &adm, nil
}

// checkNotAdmitted reads the member list as of now (linearizably) and fails if it holds
// the joining node: admitted by a request whose answer was lost (cause).
func (d *Daemon) checkNotAdmitted(ctx context.Context, req cluster.AdmitRequest, cause error) error {
	if err := d.linearizableRead(ctx); err != nil {
		return fmt.Errorf("%w; no master answered since: %v", cause, err)
	}
	for _, m := range d.fsm.Members() {
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
func (d *Daemon) admitHere(ctx context.Context, req cluster.AdmitRequest) (*cluster.Admission, error) {
	d.memberMu.Lock()
	defer d.memberMu.Unlock()
	cl := d.fsm.Cluster()
	if err := d.checkJoinLevel(req); err != nil {
		return nil, err
	}
	if err := checkJoinToken(cl, req.Token, time.Now()); err != nil {
		// Logged, rate-limited, by the join throttle of the node the caller reached.
		return nil, err
	}
	if err := memberClash(d.fsm.Members(), req.Name, req.IP); err != nil {
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
	res, err := d.applyLocal(ctx, &fsm.AddMember{Member: fsm.Member{
		CID: cid, Name: req.Name, IP: req.IP, Port: req.Port, Fingerprint: fp,
		Suffrage: fsm.Nonvoter, JoinedAt: time.Now().UTC(),
	}})
	if err != nil {
		return nil, cluster.FirstProposal(err)
	}
	if err := d.rn().AddNonvoter(ctx, cid, addr); err != nil {
		// The node is a member from the commit above on: answer it, so that it gets its
		// certificate. The voter policy adds a member missing from Raft (on whichever
		// node is master by then).
		d.logger.Warn("admitted node not added to raft yet; the voter policy will", "cid", cid, "address", addr, "error", err)
	}
	d.logger.Info("node admitted", "cid", cid, "name", req.Name, "address", addr)
	d.kickLeaderDuties()
	return &cluster.Admission{ClusterID: cl.ID, Epoch: cl.Epoch, CID: cid, CertPEM: certPEM, CACertPEM: cl.CACertPEM,
		Members: d.fsm.Members(), Index: res.Index, MasterAddress: d.cfg.Addr()}, nil
}

// protocolRange is the range of protocol versions this node can speak.
func (d *Daemon) protocolRange() cluster.ProtocolRange {
	return cluster.SpeakRange(d.cfg.ProtocolVersion)
}

// protocolVersion is the version this node speaks now: the one its cluster ran at when
// it joined (in this process), else the one it is configured with.
func (d *Daemon) protocolVersion() int {
	if v := d.speaking.Load(); v != 0 {
		return int(v)
	}
	return d.cfg.ProtocolVersion
}
