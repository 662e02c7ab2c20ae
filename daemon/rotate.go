package daemon

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/cluster"
	"github.com/pmgcm/pmgcm/fsm"
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

// updateFingerprints renews this node's certificate, or with all (on the master only)
// every active node's, one after the other, the master's last.
func (d *Daemon) updateFingerprints(ctx context.Context, all bool) (out *api.UpdateFingerprintsResponse, err error) {
	defer func(start time.Time) { d.metrics.observeOp("update_fingerprints", start, err) }(time.Now())
	if err := d.checkServing(); err != nil {
		return nil, err
	}
	if d.fsm.Cluster() == nil {
		return nil, ErrNoCluster
	}
	out = &api.UpdateFingerprintsResponse{}
	if all {
		if !d.rn().IsLeader() {
			master := "the master"
			if m, ok := d.masterMember(); ok {
				master = fmt.Sprintf("the master (cid %d, %s)", m.CID, m.IP)
			}
			return nil, fmt.Errorf("%w: --all renews every node's certificate from the master: run it on %s", ErrNotMaster, master)
		}
		me := d.self().CID
		for _, m := range d.activeMembers() {
			if m.CID == me {
				continue
			}
			rc := api.RenewedCert{CID: m.CID, Name: m.Name, IP: m.IP, OldFingerprint: m.Fingerprint}
			cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
			err := d.peer.RenewCert(cctx, memberAddr(m), &rc)
			cancel()
			if err != nil {
				d.logger.Warn("certificate renewal failed", "cid", m.CID, "address", memberAddr(m), "error", err)
				rc.Error = err.Error()
			}
			out.Nodes = append(out.Nodes, rc)
		}
	}
	rc, err := d.renewCert(ctx)
	if err != nil {
		if !all {
			return nil, err
		}
		rc.Error = err.Error()
	}
	out.Nodes = append(out.Nodes, rc)
	return out, nil
}

// renewCert renews this node's certificate and publishes it (see the top of this file).
func (d *Daemon) renewCert(ctx context.Context) (api.RenewedCert, error) {
	// One at a time with create, join and re-admission, which replace the identity.
	me := d.self()
	leave, err := d.gate.enter("pmgcm update-fingerprints")
	if err != nil {
		return api.RenewedCert{CID: me.CID, Name: me.Name, IP: me.IP}, err
	}
	defer leave()
	old := d.mux.Identity()
	rc := api.RenewedCert{CID: me.CID, Name: me.Name, IP: me.IP, OldFingerprint: old.Fingerprint}
	if err := d.checkServing(); err != nil {
		return rc, err
	}
	cl := d.fsm.Cluster()
	if cl == nil {
		return rc, ErrNoCluster
	}
	m, ok := d.fsm.Member(me.CID)
	if !ok {
		return rc, fmt.Errorf("%w: cid %d is not in this node's member list", fsm.ErrUnknownMember, me.CID)
	}
	ca, err := transport.ParseCA(cl.CACertPEM, cl.CAKeyPEM)
	if err != nil {
		return rc, err
	}
	certPEM, err := ca.IssueNodeCert(d.key.Public(), m.Name, net.ParseIP(m.IP), nodeCertValidity)
	if err != nil {
		return rc, err
	}
	keyPEM, err := d.dir.keyPEM()
	if err != nil {
		return rc, unusable(d.dir.file("tls", keyFile), err)
	}
	id, err := transport.NewIdentity(certPEM, keyPEM, cl.CACertPEM)
	if err != nil {
		return rc, err
	}
	next := d.dir.file("tls", certFile+nextSufx)
	if err := writeFileAtomic(next, certPEM, 0o644); err != nil {
		return rc, fmt.Errorf("write %s: %w", next, err)
	}
	idx, err := d.recordCert(ctx, cluster.CertRecord{CID: me.CID, CertPEM: certPEM})
	if err != nil {
		// The outcome may be unknown (the master changed meanwhile): look.
		if d.linearizableRead(ctx) == nil {
			if cur, ok := d.fsm.Member(me.CID); ok && cur.Fingerprint == id.Fingerprint {
				idx, err = d.fsm.AppliedIndex(), nil
			}
		}
	}
	if err != nil {
		_ = os.Remove(next)
		return rc, fmt.Errorf("publish the new certificate: %w (this node keeps its certificate)", err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err = d.rn().WaitApplied(wctx, idx)
	cancel()
	if err != nil {
		// Committed but not applied here yet: install anyway, as the cluster now knows
		// only the new certificate.
		d.logger.Warn("renewed certificate committed but not applied here yet", "index", idx, "error", err)
	}
	if err := d.installCert(id, idx); err != nil {
		return rc, err
	}
	rc.Fingerprint, rc.Expires = id.Fingerprint, id.Leaf.NotAfter
	d.logger.Info("node certificate renewed", "cid", me.CID, "address", d.cfg.Addr(),
		"old-fingerprint", old.Fingerprint, "fingerprint", id.Fingerprint, "expires", id.Leaf.NotAfter)
	return rc, nil
}

// installCert presents id on new connections from now on and moves the renewed
// certificate file into place. idx is the state-machine index that published it: peers
// that have not applied it do not know this certificate yet (see standingWatch.ask).
func (d *Daemon) installCert(id *transport.Identity, idx uint64) error {
	d.mux.SetIdentity(id)
	// Kept-alive connections carry the old certificate, which the master no longer takes
	// as this node's (checkCertCaller): new ones carry the new one.
	if d.peer != nil { // nil at start (resolveRenewal), before any connection
		d.peer.CloseIdleConnections()
	}
	if idx > d.self().JoinIndex {
		if err := d.updateSelf(func(nf *nodeFile) { nf.JoinIndex = max(nf.JoinIndex, idx) }); err != nil {
			return err
		}
	}
	if err := os.Rename(d.dir.file("tls", certFile+nextSufx), d.dir.file("tls", certFile)); err != nil {
		return fmt.Errorf("install the renewed certificate: %w", err)
	}
	return syncDir(d.dir.file("tls"))
}

// recordCert publishes member req.CID's renewed certificate, on the master (forwarded to
// it from any other node), and returns the state-machine index of the change. The
// certificate must be the cluster CA's for that member's name and address. Over the
// cluster RPC, the caller must be that member (rpcHandler.RecordCert): every member
// holds the CA key (fsm.Cluster.CAKeyPEM) and could issue any member's certificate, but
// only the member itself may publish one.
func (d *Daemon) recordCert(ctx context.Context, req cluster.CertRecord) (uint64, error) {
	return cluster.OnMaster(ctx, d.fwd, func() (uint64, error) { return d.recordCertHere(ctx, req) },
		func() (uint64, error) {
			var idx uint64
			wctx, cancel := context.WithTimeout(ctx, d.electionWait())
			defer cancel()
			err := d.fwd.CallLeader(wctx, true, func(ctx context.Context, addr string) (err error) {
				idx, err = d.peer.RecordCert(ctx, addr, req)
				return err
			})
			return idx, err
		})
}

// recordCertHere publishes a renewed certificate on this node, the master.
func (d *Daemon) recordCertHere(ctx context.Context, req cluster.CertRecord) (uint64, error) {
	d.memberMu.Lock()
	defer d.memberMu.Unlock()
	cl := d.fsm.Cluster()
	if cl == nil {
		return 0, ErrNoCluster
	}
	m, ok := d.fsm.Member(req.CID)
	if !ok {
		return 0, fmt.Errorf("%w: cid %d", fsm.ErrUnknownMember, req.CID)
	}
	fp, err := checkNodeCert(req.CertPEM, cl.CACertPEM, m)
	if err != nil {
		return 0, err
	}
	if m.Fingerprint == fp {
		return d.fsm.AppliedIndex(), nil // published already (a retry)
	}
	m.Fingerprint = fp
	res, err := d.applyLocal(ctx, &fsm.UpdateMember{Member: m})
	if err != nil {
		return 0, cluster.FirstProposal(err)
	}
	d.logger.Info("member certificate renewed", "cid", m.CID, "address", memberAddr(m), "fingerprint", fp)
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

// resolveRenewal finishes, at start, a renewal that crashed between publishing the new
// certificate and moving it into place: the new certificate is installed if the member
// cache or any peer knows it. Otherwise the node keeps its certificate and the file
// stays for the next start (a renewal that never committed is harmless: the next
// renewal overwrites it).
func (d *Daemon) resolveRenewal() {
	certPEM, err := readFileBounded(d.dir.file("tls", certFile+nextSufx), maxTLSFileBytes)
	if err != nil {
		return
	}
	fp, err := certFingerprint(certPEM)
	if err != nil || fp == d.mux.Identity().Fingerprint {
		_ = os.Remove(d.dir.file("tls", certFile+nextSufx))
		return
	}
	me := d.self()
	known, idx := false, uint64(0)
	cache := d.peers.Load()
	if m, ok := cache.member(fp); ok && m.CID == me.CID {
		known, idx = true, cache.Index
	}
	if !known && cache != nil {
		ctx, cancel := context.WithTimeout(context.Background(), startupStandingTimeout)
		answers := d.standingW.askPeers(ctx, cache.Members, fp, startupStandingTimeout)
		cancel()
		for _, a := range answers {
			if a.ClusterID == cache.ClusterID && a.Member && a.CID == me.CID {
				known, idx = true, max(idx, a.Applied)
			}
		}
	}
	if !known {
		d.logger.Warn("a renewed certificate was left by an interrupted update-fingerprints and no peer knows it yet; keeping the current one",
			"file", d.dir.file("tls", certFile+nextSufx), "fingerprint", fp)
		return
	}
	keyPEM, err := d.dir.keyPEM()
	if err != nil {
		return
	}
	caPEM, _ := readFileBounded(d.dir.file("tls", caFile), maxTLSFileBytes)
	id, err := transport.NewIdentity(certPEM, keyPEM, caPEM)
	if err != nil {
		d.logger.Error("renewed certificate unusable", "error", err)
		return
	}
	if err := d.installCert(id, idx); err != nil {
		d.logger.Error("cannot install the renewed certificate", "error", err)
		return
	}
	d.logger.Info("installed the certificate of an interrupted update-fingerprints", "fingerprint", fp)
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
