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

// joiner owns joining: pmgcm join on the joining node (probe, join, the switch to the
// cluster's state), the join channel's answer, and the protocol version this node
// speaks. Admission, on the master, is the admitter's (admit.go).
type joiner struct {
	fsm    *fsm.FSM
	logger hclog.Logger
	dir    *dataDir
	mux    *transport.Mux
	// gate admits one identity-changing operation at a time (Daemon.gate).
	gate *opGate
	// raft is this node's Raft node (Daemon.rn; made after the joiner).
	raft       func() *raftnode.Node
	self       func() nodeFile
	updateSelf func(change func(*nodeFile)) error
	// mail is the quarantine, emptied when this node joins (made by openMail).
	mail func() *mailSystem
	// ip and port are this node's cluster address.
	ip   string
	port int
	// configured is the protocol version this node is configured with.
	configured int
	// speaking is the protocol version negotiated at this node's join, 0 before.
	speaking atomic.Int32
	// trust is the peer cache, seeded from the master's answer.
	trust *peerTrust
	// host is what joining needs of the rest of the daemon.
	host joinHost
}

// joinHost is what joining needs of the daemon.
type joinHost interface {
	standing() standing
}

// newJoiner returns the joiner of d, whose data directory, fsm, mux and peer trust are made.
func newJoiner(d *Daemon) *joiner {
	return &joiner{
		fsm: d.fsm, logger: d.logger, dir: d.dir, mux: d.mux, gate: &d.gate, raft: d.rn,
		self: d.self, updateSelf: d.updateSelf, ip: d.cfg.IP, port: d.cfg.Port,
		configured: d.cfg.ProtocolVersion, trust: d.trust, mail: d.mailSys, host: d,
	}
}

// masterAddr turns the operator's "ip" or "ip:port" into an address; the port defaults
// to this node's own cluster port.
func (j *joiner) masterAddr(master string) (string, error) {
	host, port := master, strconv.Itoa(j.port)
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
func (j *joiner) probe(ctx context.Context, master string) (*api.JoinProbe, error) {
	addr, err := j.masterAddr(master)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, joinDialTimeout)
	defer cancel()
	jc, fp, err := cluster.DialJoin(ctx, net.ParseIP(j.ip), addr, "", joinDialTimeout)
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
func (j *joiner) join(ctx context.Context, req api.JoinRequest) (*api.JoinResponse, error) {
	leave, err := j.gate.enter("pmgcm join")
	if err != nil {
		return nil, err
	}
	defer leave()
	// A node removed from its cluster may join again (with a new CID).
	if id := j.trust.knownCluster(); id != "" && j.host.standing().kind != standRemoved {
		return nil, fmt.Errorf("%w: cluster %s, this node is cid %d; nothing was changed (to move it to another cluster, delete it there first and remove its data directory)",
			ErrClusterExists, id, j.self().CID)
	}
	addr, err := j.masterAddr(req.Master)
	if err != nil {
		return nil, err
	}
	fp, err := transport.NormalizeFingerprint(req.Fingerprint)
	if err != nil {
		return nil, err
	}
	ictx, cancel := context.WithTimeout(ctx, joinDialTimeout)
	defer cancel()
	jc, _, err := cluster.DialJoin(ictx, net.ParseIP(j.ip), addr, fp, joinDialTimeout)
	if err != nil {
		return nil, unreachable(addr, err)
	}
	defer jc.CloseIdleConnections()
	info, err := jc.JoinInfo(ictx, addr)
	if err != nil {
		return nil, err
	}
	speak, err := cluster.CheckCompatible(j.protocolRange(),
		cluster.PeerRange(info.ProtocolVersion, info.ProtocolMin, info.ProtocolMax), info.ProtocolVersion, info.StateFormat)
	if err != nil {
		return nil, fmt.Errorf("%w (the node at %s)", err, addr)
	}
	keyPEM, err := j.dir.keyPEM()
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
	me := j.self()
	areq := cluster.AdmitRequest{
		Token: req.Token, Name: me.Name, IP: me.IP, Port: me.Port,
		PublicKeyPEM:    pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}),
		ProtocolVersion: speak, StateFormat: StateFormat, // a first-release master takes exactly 2
		ProtocolMin: j.protocolRange().Min, ProtocolMax: j.protocolRange().Max,
		Version: version.Version, Level: version.Level,
	}
	actx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	adm, err := jc.JoinAdmit(actx, addr, areq)
	if err != nil {
		return nil, err
	}
	j.speaking.Store(int32(speak))
	if err := j.becomeMember(adm); err != nil {
		return nil, fmt.Errorf("the cluster admitted this node as cid %d, but it could not switch to the cluster's state: %w; restart pmgclusterd to finish the join", adm.CID, err)
	}
	j.logger.Info("joined cluster", "cluster-id", adm.ClusterID, "cid", adm.CID, "master", adm.MasterAddress)
	return &api.JoinResponse{ClusterID: adm.ClusterID, CID: adm.CID, Name: me.Name, MasterAddress: adm.MasterAddress}, nil
}

// becomeMember replaces this node's state with the cluster's: the admitted certificate
// and CID, an empty Raft log that the master fills, and the master's member list as the
// trusted peers until then. Each step is durable before the next, and WipeRaft in
// node.json makes a restart finish an interrupted switch.
func (j *joiner) becomeMember(adm cluster.Admission) error {
	keyPEM, err := j.dir.keyPEM()
	if err != nil {
		return err
	}
	certPEM := adm.CertPEM
	if len(certPEM) == 0 { // re-admission: the node keeps its certificate
		if certPEM, err = readFileBounded(j.dir.file("tls", certFile), maxTLSFileBytes); err != nil {
			return err
		}
	}
	id, err := transport.NewIdentity(certPEM, keyPEM, adm.CACertPEM)
	if err != nil {
		return fmt.Errorf("certificate from the master: %w", err)
	}
	if err := j.dir.writePendingIdentity(certPEM, adm.CACertPEM); err != nil {
		return err
	}
	if err := j.dir.commitPendingIdentity(); err != nil {
		return err
	}
	j.mux.SetIdentity(id)
	if err := j.trust.store(&peerCache{Index: adm.Index, ClusterID: adm.ClusterID, Epoch: adm.Epoch, Members: adm.Members}); err != nil {
		return err
	}
	if err := j.updateSelf(func(nf *nodeFile) {
		*nf = nf.withStanding(standing{kind: standMember})
		nf.CID, nf.Joined, nf.WipeRaft, nf.JoinIndex = adm.CID, true, true, adm.Index
	}); err != nil {
		return err
	}
	// Raft restarts in place as the cluster's cid, its own state replaced.
	return j.raft().Restart(raftnode.RestartOptions{LocalID: raftnode.ServerID(adm.CID), Prepare: func(string) error {
		if len(adm.CertPEM) > 0 {
			// A join replaces the node's data with the cluster's; a re-admission after a
			// forced promotion keeps it.
			if err := j.mail().wipeMail(); err != nil {
				return err
			}
		}
		return j.wipeRaft()
	}})
}

// wipeRaft removes the node's Raft state and clears WipeRaft.
func (j *joiner) wipeRaft() error {
	if err := os.RemoveAll(j.dir.file("raft")); err != nil {
		return fmt.Errorf("remove %s: %w", j.dir.file("raft"), err)
	}
	return j.updateSelf(func(nf *nodeFile) { nf.WipeRaft = false })
}

// joinInfo says who this node is, for a joining node (cluster.JoinPathInfo).
func (j *joiner) joinInfo() cluster.JoinInfo {
	me := j.self()
	r := j.protocolRange()
	info := cluster.JoinInfo{Name: me.Name, CID: me.CID, ProtocolVersion: j.protocolVersion(), StateFormat: StateFormat,
		ProtocolMin: r.Min, ProtocolMax: r.Max}
	if cl := j.fsm.Cluster(); cl != nil {
		info.ClusterID = cl.ID
	}
	return info
}

// protocolRange is the range of protocol versions this node can speak.
func (j *joiner) protocolRange() cluster.ProtocolRange {
	return cluster.SpeakRange(j.configured)
}

// protocolVersion is the version this node speaks now: the one its cluster ran at when
// it joined (in this process), else the one it is configured with.
func (j *joiner) protocolVersion() int {
	if v := j.speaking.Load(); v != 0 {
		return int(v)
	}
	return j.configured
}
