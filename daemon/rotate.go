package daemon

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/cluster"
	"github.com/pmgcm/pmgcm/fsm"
	"github.com/pmgcm/pmgcm/internal/dirsync"
	"github.com/pmgcm/pmgcm/raftnode"
	"github.com/pmgcm/pmgcm/transport"
)

// Certificate rotation (pmgcm update-fingerprints). A node keeps its key and gets a new
// certificate from the cluster CA, whose key is in the replicated state. The order makes
// it safe without a restart:
//
//  1. the new certificate is written to tls/node.crt.next (so a crash loses nothing);
//  2. the master records its fingerprint in the member list (fsm.UpdateMember): from
//     then on every member refuses the old certificate for new connections;
//  3. as soon as this node has applied that entry, it presents the new certificate on
//     new connections (Mux.SetIdentity) and moves node.crt.next into place.
//
// Connections made before keep working. Between 2 and 3 a new connection with the old
// certificate is refused, and a peer that has not applied the entry yet does not know
// the new one: authorizePeer, which never waits inside a handshake, refuses it, and Raft
// and forwarding (a connection never made is retried) try again.

// nextSufx marks a renewed certificate not yet known to be published.
const nextSufx = ".next"

// certWarnAhead is how long before a node certificate expires status warns.
const certWarnAhead = 30 * 24 * time.Hour

// certRenewer owns certificate rotation (pmgcm update-fingerprints): it renews this
// node's certificate (or, on the master, every node's), publishes a member's renewed
// certificate on the master, and finishes at start a renewal a crash interrupted.
type certRenewer struct {
	// writes commits commands and reads linearizably (rpc.go).
	writes *writer
	fsm    *fsm.FSM
	logger hclog.Logger
	// host is what rotation needs of the rest of the daemon.
	host renewHost
	// members lists the members and finds the master among them.
	members *memberView
	// raft is this node's Raft node (Daemon.rn; made after the renewer).
	raft func() *raftnode.Node
	// peer and fwd are the cluster RPC client and the forwarder (made by openRPC).
	peer func() *cluster.Client
	fwd  func() *cluster.Forwarder
	mux  *transport.Mux
	key  crypto.Signer
	dir  *dataDir
	// addr is this node's cluster address.
	addr         string
	electionWait time.Duration
	// gate admits one identity-changing operation at a time (Daemon.gate).
	gate *opGate
	// turn serializes membership changes on the master (Daemon.memberTurn).
	turn *memberTurn
	// peers is the membership this node trusts at the handshake (Daemon.peers).
	peers *atomic.Pointer[peerCache]
	// self and updateSelf read and change this node's identity file.
	self       func() nodeFile
	updateSelf func(func(*nodeFile)) error
	// askPeers asks the members how they see a fingerprint (standingWatch.askPeers).
	askPeers func(ctx context.Context, members []fsm.Member, fingerprint string, timeout time.Duration) []cluster.Membership
	// observe records an operation's duration and outcome in the metrics.
	observe func(op string, start time.Time, err error)
}

// renewHost is what certificate rotation needs of the daemon.
type renewHost interface {
	checkServing() error
}

// newCertRenewer returns the certificate renewer of d, whose fsm, mux and standing
// watch are made.
func newCertRenewer(d *Daemon) *certRenewer {
	return &certRenewer{
		writes: d.writes, fsm: d.fsm, logger: d.logger, host: d, members: d.members, raft: d.rn,
		peer: func() *cluster.Client { return d.peer }, fwd: func() *cluster.Forwarder { return d.fwd },
		mux: d.mux, key: d.key, dir: d.dir, addr: d.cfg.Addr(), electionWait: electionWait(d.cfg.Raft),
		gate: &d.gate, turn: &d.memberTurn, peers: &d.peers, self: d.self, updateSelf: d.updateSelf,
		askPeers: d.standingW.askPeers, observe: d.metrics.observeOp,
	}
}

// updateFingerprints renews this node's certificate, or with all (on the master only)
// every active node's, one after the other, the master's last.
func (c *certRenewer) updateFingerprints(ctx context.Context, all bool) (out *api.UpdateFingerprintsResponse, err error) {
	defer func(start time.Time) { c.observe("update_fingerprints", start, err) }(time.Now())
	if err := c.host.checkServing(); err != nil {
		return nil, err
	}
	if c.fsm.Cluster() == nil {
		return nil, ErrNoCluster
	}
	out = &api.UpdateFingerprintsResponse{}
	if all {
		if !c.raft().IsLeader() {
			master := "the master"
			if m, ok := c.members.master(); ok {
				master = fmt.Sprintf("the master (cid %d, %s)", m.CID, m.IP)
			}
			return nil, fmt.Errorf("%w: --all renews every node's certificate from the master: run it on %s", ErrNotMaster, master)
		}
		me := c.self().CID
		for _, m := range c.members.active() {
			if m.CID == me {
				continue
			}
			rc := api.RenewedCert{CID: m.CID, Name: m.Name, IP: m.IP, OldFingerprint: m.Fingerprint}
			cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
			err := c.peer().RenewCert(cctx, memberAddr(m), &rc)
			cancel()
			if err != nil {
				c.logger.Warn("certificate renewal failed", "cid", m.CID, "address", memberAddr(m), "error", err)
				rc.Error = err.Error()
			}
			out.Nodes = append(out.Nodes, rc)
		}
	}
	rc, err := c.renew(ctx)
	if err != nil {
		if !all {
			return nil, err
		}
		rc.Error = err.Error()
	}
	out.Nodes = append(out.Nodes, rc)
	return out, nil
}

// renew renews this node's certificate and publishes it (see the top of this file).
func (c *certRenewer) renew(ctx context.Context) (api.RenewedCert, error) {
	// One at a time with create, join and re-admission, which replace the identity.
	me := c.self()
	leave, err := c.gate.enter("pmgcm update-fingerprints")
	if err != nil {
		return api.RenewedCert{CID: me.CID, Name: me.Name, IP: me.IP}, err
	}
	defer leave()
	old := c.mux.Identity()
	rc := api.RenewedCert{CID: me.CID, Name: me.Name, IP: me.IP, OldFingerprint: old.Fingerprint}
	if err := c.host.checkServing(); err != nil {
		return rc, err
	}
	cl := c.fsm.Cluster()
	if cl == nil {
		return rc, ErrNoCluster
	}
	m, ok := c.fsm.Member(me.CID)
	if !ok {
		return rc, fmt.Errorf("%w: cid %d is not in this node's member list", fsm.ErrUnknownMember, me.CID)
	}
	ca, err := transport.ParseCA(cl.CACertPEM, cl.CAKeyPEM)
	if err != nil {
		return rc, err
	}
	certPEM, err := ca.IssueNodeCert(c.key.Public(), m.Name, net.ParseIP(m.IP), nodeCertValidity)
	if err != nil {
		return rc, err
	}
	keyPEM, err := c.dir.keyPEM()
	if err != nil {
		return rc, unusable(c.dir.file("tls", keyFile), err)
	}
	id, err := transport.NewIdentity(certPEM, keyPEM, cl.CACertPEM)
	if err != nil {
		return rc, err
	}
	next := c.dir.file("tls", certFile+nextSufx)
	if err := writeFileAtomic(next, certPEM, 0o644); err != nil {
		return rc, fmt.Errorf("write %s: %w", next, err)
	}
	idx, err := c.record(ctx, cluster.CertRecord{CID: me.CID, CertPEM: certPEM})
	if err != nil {
		// The outcome may be unknown (the master changed meanwhile): look.
		if c.writes.linearizableRead(ctx) == nil {
			if cur, ok := c.fsm.Member(me.CID); ok && cur.Fingerprint == id.Fingerprint {
				idx, err = c.fsm.AppliedIndex(), nil
			}
		}
	}
	if err != nil {
		_ = os.Remove(next)
		return rc, fmt.Errorf("publish the new certificate: %w (this node keeps its certificate)", err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err = c.raft().WaitApplied(wctx, idx)
	cancel()
	if err != nil {
		// Committed but not applied here yet: install anyway, as the cluster now knows
		// only the new certificate.
		c.logger.Warn("renewed certificate committed but not applied here yet", "index", idx, "error", err)
	}
	if err := c.install(id, idx); err != nil {
		return rc, err
	}
	rc.Fingerprint, rc.Expires = id.Fingerprint, id.Leaf.NotAfter
	c.logger.Info("node certificate renewed", "cid", me.CID, "address", c.addr,
		"old-fingerprint", old.Fingerprint, "fingerprint", id.Fingerprint, "expires", id.Leaf.NotAfter)
	return rc, nil
}

// install presents id on new connections from now on and moves the renewed
// certificate file into place. idx is the state-machine index that published it: peers
// that have not applied it do not know this certificate yet (see standingWatch.ask).
func (c *certRenewer) install(id *transport.Identity, idx uint64) error {
	c.mux.SetIdentity(id)
	// Kept-alive connections carry the old certificate, which the master no longer takes
	// as this node's (checkCertCaller): new ones carry the new one.
	if peer := c.peer(); peer != nil { // nil at start (resolve), before any connection
		peer.CloseIdleConnections()
	}
	if idx > c.self().JoinIndex {
		if err := c.updateSelf(func(nf *nodeFile) { nf.JoinIndex = max(nf.JoinIndex, idx) }); err != nil {
			return err
		}
	}
	if err := os.Rename(c.dir.file("tls", certFile+nextSufx), c.dir.file("tls", certFile)); err != nil {
		return fmt.Errorf("install the renewed certificate: %w", err)
	}
	return dirsync.Sync(c.dir.file("tls"))
}

// record publishes member req.CID's renewed certificate, on the master (forwarded to
// it from any other node), and returns the state-machine index of the change. The
// certificate must be the cluster CA's for that member's name and address. Over the
// cluster RPC, the caller must be that member (rpcHandler.RecordCert): every member
// holds the CA key (fsm.Cluster.CAKeyPEM) and could issue any member's certificate, but
// only the member itself may publish one.
func (c *certRenewer) record(ctx context.Context, req cluster.CertRecord) (uint64, error) {
	return cluster.OnMaster(ctx, c.fwd(), func() (uint64, error) { return c.recordHere(ctx, req) },
		func() (uint64, error) {
			var idx uint64
			wctx, cancel := context.WithTimeout(ctx, c.electionWait)
			defer cancel()
			err := c.fwd().CallLeader(wctx, true, func(ctx context.Context, addr string) (err error) {
				idx, err = c.peer().RecordCert(ctx, addr, req)
				return err
			})
			return idx, err
		})
}

// recordHere publishes a renewed certificate on this node, the master.
func (c *certRenewer) recordHere(ctx context.Context, req cluster.CertRecord) (uint64, error) {
	release, err := c.turn.take(ctx)
	if err != nil {
		return 0, err
	}
	defer release()
	cl := c.fsm.Cluster()
	if cl == nil {
		return 0, ErrNoCluster
	}
	m, ok := c.fsm.Member(req.CID)
	if !ok {
		return 0, fmt.Errorf("%w: cid %d", fsm.ErrUnknownMember, req.CID)
	}
	fp, err := checkNodeCert(req.CertPEM, cl.CACertPEM, m)
	if err != nil {
		return 0, err
	}
	if m.Fingerprint == fp {
		return c.fsm.AppliedIndex(), nil // published already (a retry)
	}
	m.Fingerprint = fp
	res, err := c.writes.applyLocal(ctx, &fsm.UpdateMember{Member: m})
	if err != nil {
		return 0, cluster.FirstProposal(err)
	}
	c.logger.Info("member certificate renewed", "cid", m.CID, "address", memberAddr(m), "fingerprint", fp)
	return res.Index, nil
}

// checkNodeCert checks that certPEM is a node certificate of the cluster CA for member
// m (its name and address) and returns its fingerprint.
func checkNodeCert(certPEM, caPEM []byte, m fsm.Member) (string, error) {
	block, _ := pem.Decode(certPEM)
	if block == nil {
		return "", fmt.Errorf("%w: no PEM certificate", ErrBadRequest)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return "", fmt.Errorf("%w: no cluster CA", ErrBadRequest)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return "", fmt.Errorf("%w: certificate is not from the cluster CA: %v", ErrBadRequest, err)
	}
	ip := net.ParseIP(m.IP)
	if cert.Subject.CommonName != m.Name || len(cert.IPAddresses) != 1 || !cert.IPAddresses[0].Equal(ip) {
		return "", fmt.Errorf("%w: certificate for %s (%v) does not match cid %d (%s, %s)",
			ErrBadRequest, cert.Subject.CommonName, cert.IPAddresses, m.CID, m.Name, m.IP)
	}
	return transport.Fingerprint(cert.Raw), nil
}

// resolve finishes, at start, a renewal that crashed between publishing the new
// certificate and moving it into place: the new certificate is installed if the member
// cache or any peer knows it. Otherwise the node keeps its certificate and the file
// stays for the next start (a renewal that never committed is harmless: the next
// renewal overwrites it).
func (c *certRenewer) resolve() {
	certPEM, err := readFileBounded(c.dir.file("tls", certFile+nextSufx), maxTLSFileBytes)
	if err != nil {
		return
	}
	fp, err := certFingerprint(certPEM)
	if err != nil || fp == c.mux.Identity().Fingerprint {
		_ = os.Remove(c.dir.file("tls", certFile+nextSufx))
		return
	}
	me := c.self()
	known, idx := false, uint64(0)
	cache := c.peers.Load()
	if m, ok := cache.member(fp); ok && m.CID == me.CID {
		known, idx = true, cache.Index
	}
	if !known && cache != nil {
		ctx, cancel := context.WithTimeout(context.Background(), startupStandingTimeout)
		answers := c.askPeers(ctx, cache.Members, fp, startupStandingTimeout)
		cancel()
		for _, a := range answers {
			if a.ClusterID == cache.ClusterID && a.Member && a.CID == me.CID {
				known, idx = true, max(idx, a.Applied)
			}
		}
	}
	if !known {
		c.logger.Warn("a renewed certificate was left by an interrupted update-fingerprints and no peer knows it yet; keeping the current one",
			"file", c.dir.file("tls", certFile+nextSufx), "fingerprint", fp)
		return
	}
	keyPEM, err := c.dir.keyPEM()
	if err != nil {
		return
	}
	caPEM, _ := readFileBounded(c.dir.file("tls", caFile), maxTLSFileBytes)
	id, err := transport.NewIdentity(certPEM, keyPEM, caPEM)
	if err != nil {
		c.logger.Error("renewed certificate unusable", "error", err)
		return
	}
	if err := c.install(id, idx); err != nil {
		c.logger.Error("cannot install the renewed certificate", "error", err)
		return
	}
	c.logger.Info("installed the certificate of an interrupted update-fingerprints", "fingerprint", fp)
}

// certWarnings returns a status warning for each node whose certificate expires within
// certWarnAhead.
func certWarnings(rows []api.Node, now time.Time) []string {
	var out []string
	for _, r := range rows {
		if r.CertExpires.IsZero() || r.CertExpires.Sub(now) > certWarnAhead {
			continue
		}
		what := "expires " + r.CertExpires.UTC().Format("2006-01-02")
		if !r.CertExpires.After(now) {
			what = "expired " + r.CertExpires.UTC().Format("2006-01-02")
		}
		out = append(out, fmt.Sprintf("the certificate of cid %d (%s, %s) %s: renew it with pmgcm update-fingerprints on that node, or pmgcm update-fingerprints --all on the master",
			r.CID, r.Name, r.IP, what))
	}
	return out
}
