package daemon

import (
	"context"
	"crypto"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/fsm"
	"github.com/pmgcm/pmgcm/internal/version"
	"github.com/pmgcm/pmgcm/raftnode"
	"github.com/pmgcm/pmgcm/transport"
)

// nodeCertValidity is how long a node certificate signed by the cluster CA is valid.
const nodeCertValidity = 2 * 365 * 24 * time.Hour

// creator owns the founding of a cluster (pmgcm create: its ID, CA, this node's
// certificate and the join token, committed as one command), finishing a create that
// crashed before its certificate was in place, and the join command that admits further
// nodes (pmgcm join-cmd, with token rotation).
type creator struct {
	// stat is this node's view of the cluster (status.go).
	stat *statusReporter
	// writes commits commands and reads linearizably (rpc.go).
	writes *writer
	fsm    *fsm.FSM
	logger hclog.Logger
	// host is what create and join-cmd need of the rest of the daemon.
	host createHost
	// raft is this node's Raft node (Daemon.rn; made after the creator).
	raft func() *raftnode.Node
	// mux presents the new certificate on new connections.
	mux *transport.Mux
	key crypto.Signer
	dir *dataDir
	// gate admits one identity-changing operation at a time (Daemon.gate).
	gate *opGate
	// self is this node's identity file.
	self func() nodeFile
	// members finds the master as a member.
	members *memberView
	// tokens rotates the join token (join-cmd --rotate).
	tokens *tokenKeeper
	// trust knows the cluster this node is in.
	trust *peerTrust
	// levels asks every member for its feature level (versionKeeper.lowestLevel).
	levels func(ctx context.Context, members []fsm.Member) (int, string, error)
}

// createHost is what create and join-cmd need of the daemon.
type createHost interface {
	checkServing() error
	setSelf(nf nodeFile) error
}

// newCreator returns the creator of d, whose fsm, key, mux and token keeper are made.
func newCreator(d *Daemon) *creator {
	return &creator{
		writes: d.writes, fsm: d.fsm, logger: d.logger, stat: d.stat, host: d, raft: d.rn, mux: d.mux, key: d.key, dir: d.dir,
		gate: &d.gate, self: d.self, members: d.members, tokens: d.tokens, trust: d.trust,
		levels: d.versions.lowestLevel,
	}
}

// create makes this standalone node the master of a new cluster: a cluster ID, a CA, a
// certificate for this node signed by it, and a join token, committed as one Raft command.
// Configuration entries already on the node are kept.
func (c *creator) create(ctx context.Context) (*api.CreateResponse, error) {
	leave, err := c.gate.enter("pmgcm create")
	if err != nil {
		return nil, err
	}
	defer leave()
	if id := c.trust.knownCluster(); id != "" {
		return nil, fmt.Errorf("%w: cluster %s, this node is cid %d; nothing was changed", ErrClusterExists, id, c.self().CID)
	}
	if err := waitLeader(ctx, c.raft()); err != nil {
		return nil, err
	}
	clusterID, err := newClusterID()
	if err != nil {
		return nil, err
	}
	ca, err := transport.NewCA(clusterID)
	if err != nil {
		return nil, fmt.Errorf("make cluster CA: %w", err)
	}
	certPEM, err := ca.IssueNodeCert(c.key.Public(), c.self().Name, net.ParseIP(c.self().IP), nodeCertValidity)
	if err != nil {
		return nil, fmt.Errorf("sign node certificate: %w", err)
	}
	fp, err := certFingerprint(certPEM)
	if err != nil {
		return nil, err
	}
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return nil, err
	}
	if err := c.dir.writePendingIdentity(certPEM, ca.CertPEM); err != nil {
		return nil, fmt.Errorf("write certificate: %w", err)
	}
	cmd := &fsm.CreateCluster{
		ClusterID:     clusterID,
		CreatedAt:     time.Now().UTC(),
		CACertPEM:     ca.CertPEM,
		CAKeyPEM:      ca.KeyPEM,
		JoinTokenSalt: salt,
		JoinTokenHash: hashToken(joinToken(ca.KeyPEM, salt)),
		Founder: fsm.Member{
			CID: 1, Name: c.self().Name, IP: c.self().IP, Port: c.self().Port,
			Fingerprint: fp, Suffrage: fsm.Voter, JoinedAt: time.Now().UTC(),
		},
	}
	res, err := c.writes.propose(ctx, cmd)
	if err != nil {
		// The outcome of a command that timed out is unknown: look at the state.
		if m, ok := c.fsm.Member(1); !ok || m.Fingerprint != fp {
			c.dir.dropPendingIdentity()
			return nil, err
		}
	}
	if res != nil {
		me := c.self()
		me.JoinIndex = res.Index
		if err := c.host.setSelf(me); err != nil {
			return nil, err
		}
	}
	if err := c.installPendingIdentity(); err != nil {
		return nil, fmt.Errorf("cluster %s was created but its certificate could not be installed (restart pmgclusterd to retry): %w", clusterID, err)
	}
	c.logger.Info("cluster created", "cluster-id", clusterID, "cid", 1, "fingerprint", fp)
	return &api.CreateResponse{ClusterID: clusterID, CID: 1, Fingerprint: fp}, nil
}

// waitLeader waits for n's own election, which a standalone node wins alone.
func waitLeader(ctx context.Context, n *raftnode.Node) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return n.WaitLeader(ctx)
}

// installPendingIdentity moves the pending certificate and CA into place and starts
// presenting them on new connections.
func (c *creator) installPendingIdentity() error {
	if err := c.dir.commitPendingIdentity(); err != nil {
		return err
	}
	certPEM, err := readFileBounded(c.dir.file("tls", certFile), maxTLSFileBytes)
	if err != nil {
		return err
	}
	caPEM, err := readFileBounded(c.dir.file("tls", caFile), maxTLSFileBytes)
	if err != nil {
		return err
	}
	keyPEM, err := c.dir.keyPEM()
	if err != nil {
		return err
	}
	id, err := transport.NewIdentity(certPEM, keyPEM, caPEM)
	if err != nil {
		return err
	}
	c.mux.SetIdentity(id)
	return nil
}

// newClusterID returns a random cluster ID in the form xxxxxxxx-xxxx-xxxx.
func newClusterID() (string, error) {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:], nil
}

// joinToken derives the cluster's join token from the CA key and a salt, both in the
// replicated state, so that any member can show it while the state holds only its hash.
// Rotating the salt rotates the token.
func joinToken(caKeyPEM, salt []byte) string {
	mac := hmac.New(sha256.New, caKeyPEM)
	mac.Write([]byte("pmgcm join token\x00"))
	mac.Write(salt)
	return base64.RawURLEncoding.EncodeToString(mac.Sum(nil)[:24])
}

func hashToken(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

// certFingerprint returns the fingerprint of a PEM certificate.
func certFingerprint(certPEM []byte) (string, error) {
	block, _ := pem.Decode(certPEM)
	if block == nil {
		return "", errors.New("no PEM certificate")
	}
	if _, err := x509.ParseCertificate(block.Bytes); err != nil {
		return "", err
	}
	return transport.Fingerprint(block.Bytes), nil
}

// joinCmd returns the command that joins a node to this cluster, after replacing the
// join token if rotate is set, with one that expires after ttl if ttl is positive. It
// works on any member: the token derives from the replicated CA key and salt, and the
// master is whoever leads now. An expired token is not shown: the operator is told to
// make a new one.
func (c *creator) joinCmd(ctx context.Context, rotate bool, ttl time.Duration) (*api.JoinCmd, error) {
	if err := c.host.checkServing(); err != nil {
		return nil, err
	}
	if c.fsm.Cluster() == nil {
		return nil, ErrNoCluster
	}
	if ttl < 0 {
		return nil, fmt.Errorf("%w: --ttl %s is negative", ErrBadRequest, ttl)
	}
	if ttl > 0 {
		if err := c.expiryEnforced(ctx); err != nil {
			return nil, err
		}
	}
	if rotate || ttl > 0 {
		var expires time.Time
		if ttl > 0 {
			expires = time.Now().Add(ttl).Truncate(time.Second).Add(time.Second)
		}
		if err := c.tokens.rotate(ctx, expires); err != nil {
			return nil, err
		}
		c.logger.Info("join token rotated", "expires", expires)
	}
	cl := c.fsm.Cluster()
	var expires *time.Time
	if exp, ok := tokenExpiry(cl.JoinTokenSalt); ok {
		if !time.Now().Before(exp) {
			return nil, fmt.Errorf("%w: it expired at %s; make a new one with pmgcm join-cmd --rotate (add --ttl D for one that expires)",
				ErrTokenExpired, exp.Format(time.RFC3339))
		}
		expires = &exp
	}
	if _, err := c.writes.leaderAddr(); err != nil {
		return nil, fmt.Errorf("%w: %s", err, c.stat.quorumSummary())
	}
	master, ok := c.members.master()
	if !ok {
		return nil, fmt.Errorf("%w: the master is not in this node's member list yet; try again", raftnode.ErrNoLeader)
	}
	addr := master.IP
	if master.Port != DefaultPort {
		addr = memberAddr(master)
	}
	token := joinToken(cl.CAKeyPEM, cl.JoinTokenSalt)
	return &api.JoinCmd{
		Master: addr, Fingerprint: master.Fingerprint, Token: token, Expires: expires,
		Command: api.JoinCommandLine(addr, master.Fingerprint, token),
	}, nil
}

// expiryEnforced checks, before a token that expires is made, that every member
// enforces the expiry: a master of release 0.1.0 admits with a token without looking at
// it (jointoken.go), so in a cluster that has one, --ttl would promise what the cluster
// does not keep. At the cluster version that says every member is of a later release,
// nothing is asked (the version never goes down, and no older build is admitted at
// it); below it, in a mixed cluster or a new one whose version is not recorded yet,
// every member is asked for its level, and one that does not answer refuses the
// token too.
func (c *creator) expiryEnforced(ctx context.Context) error {
	if c.fsm.ClusterVersion() >= levelEnforcesExpiry {
		return nil
	}
	release := version.Releases[levelEnforcesExpiry]
	lowest, who, err := c.levels(ctx, c.fsm.Members())
	if err != nil {
		// Not wrapped: a member's RPC error is not this request's answer (writeErr).
		return fmt.Errorf("%w: --ttl needs every member at release %s or later, which enforce a token's expiry, "+
			"and this could not be checked: %v; try again once every member is up (a fenced member answers once "+
			"it is re-admitted with pmgcm sync, or deleted), or %s and rotate it once the new nodes have joined",
			ErrMemberUnreachable, release, err, noExpiryAdvice)
	}
	if lowest < levelEnforcesExpiry {
		return fmt.Errorf("%w: --ttl needs every member at release %s or later: %s runs %s, which as master "+
			"would admit a node with the token after it expired; upgrade it first (pmgcm status shows each node's version), "+
			"or %s and rotate it once the new nodes have joined",
			ErrIncompatible, release, who, version.LevelName(lowest), noExpiryAdvice)
	}
	return nil
}

// reconcileIdentity finishes a create that crashed between committing the Raft command
// and moving its certificate into place, once the log has been replayed; ctx ends with
// the daemon.
func (c *creator) reconcileIdentity(ctx context.Context) {
	pending, ok := c.dir.pendingCert()
	if !ok {
		return
	}
	// Only a standalone node writes pending files (at create): once it leads again, its
	// state machine holds every committed command.
	if err := waitLeader(ctx, c.raft()); err != nil {
		return
	}
	fp, err := certFingerprint(pending)
	if err != nil {
		c.dir.dropPendingIdentity()
		return
	}
	m, ok := c.fsm.Member(c.self().CID)
	if !ok || m.Fingerprint != fp {
		c.logger.Info("dropping a certificate whose cluster command never committed")
		c.dir.dropPendingIdentity()
		return
	}
	if err := c.installPendingIdentity(); err != nil {
		c.logger.Error("cannot install the cluster certificate", "error", err)
	}
}
