package cluster

import (
	"github.com/pmgcm/pmgcm/fsm"
)

// ProtocolVersion is the version of the node-to-node protocol (cluster RPC, join and
// mail replication) this build speaks by default. Nodes negotiate: see version.go.
//
// 2: mail replication answers carry the serving node's compaction floors ("skip").
const ProtocolVersion = 2

// MinProtocolVersion and MaxProtocolVersion bound the protocol versions this build can
// speak (a compatibility drill may pick one with --protocol-version).
const (
	MinProtocolVersion = 2
	MaxProtocolVersion = ProtocolVersion
)

// StateFormat is the version of the replicated state's encoding: commands and snapshots.
const StateFormat = fsm.EncodingVersion

// Paths of the cluster RPC channel (transport.ChanRPC: members only, mutual TLS).
const (
	// PathNode answers GET with the node's own status row (api.Node).
	PathNode = "/rpc/v1/node"
	// PathApply takes POST of an fsm-encoded command, on the master, and answers ApplyResult.
	PathApply = "/rpc/v1/apply"
	// PathReadIndex answers GET, on the master, with ReadIndexResult.
	PathReadIndex = "/rpc/v1/readindex"
	// PathAdmit takes POST AdmitRequest forwarded by a member, on the master, and answers Admission.
	PathAdmit = "/rpc/v1/admit"
	// PathDelete takes POST api.DeleteRequest, on the master, and answers api.DeleteResponse.
	PathDelete = "/rpc/v1/delete"
	// PathTransfer takes POST TransferRequest, on the master: hand leadership to that member.
	PathTransfer = "/rpc/v1/transfer"
	// PathReadmit takes POST ReadmitRequest forwarded by a member, on the master,
	// and answers Admission: the re-admission of a fenced member.
	PathReadmit = "/rpc/v1/readmit"
	// PathRecordCert takes POST CertRecord, on the master: publish a member's renewed
	// certificate; it answers ApplyResult.
	PathRecordCert = "/rpc/v1/record-cert"
	// PathRenewCert takes POST, on any member: renew your own certificate; it answers
	// api.RenewedCert.
	PathRenewCert = "/rpc/v1/renew-cert"
)

// Paths of the join channel (transport.ChanJoin: a client certificate is optional).
const (
	// JoinPathInfo answers GET with JoinInfo.
	JoinPathInfo = "/join/v1/info"
	// JoinPathAdmit takes POST AdmitRequest from a joining node and answers Admission.
	JoinPathAdmit = "/join/v1/admit"
	// JoinPathMembership takes POST FingerprintRequest and answers Membership.
	JoinPathMembership = "/join/v1/membership"
	// JoinPathReadmit takes POST ReadmitRequest (release 0.1.0 sends "{}") from a fenced
	// member presenting its own certificate and answers Admission.
	JoinPathReadmit = "/join/v1/readmit"
)

// MaxRequestBytes bounds every JSON request body of the protocol. The largest, an
// AdmitRequest or a CertRecord, carries one PEM block of a few kilobytes.
const MaxRequestBytes = 64 << 10

// MaxCommandBytes bounds the body of PathApply: one fsm-encoded command, whose value is
// at most fsm.MaxValueLen.
const MaxCommandBytes = 2 * fsm.MaxValueLen

// MaxResponseBytes bounds every answer the Client decodes (an Admission carries the
// whole member list).
const MaxResponseBytes = 8 << 20

// JoinInfo is what a node tells a joining node about itself (JoinPathInfo).
type JoinInfo struct {
	ClusterID string `json:"cluster_id"`
	Name      string `json:"name"`
	CID       uint64 `json:"cid"`
	// ProtocolVersion is the version the node's cluster runs at: the one a joining node
	// must speak (a first-release node knows only this field, and only 2).
	ProtocolVersion int `json:"protocol_version"`
	StateFormat     int `json:"state_format"`
	// ProtocolMin and ProtocolMax are the range the node can speak; absent (0) from a
	// first-release node, which speaks exactly ProtocolVersion.
	ProtocolMin int `json:"protocol_min,omitempty"`
	ProtocolMax int `json:"protocol_max,omitempty"`
}

// AdmitRequest asks the master to admit a node (JoinPathAdmit, forwarded as PathAdmit).
type AdmitRequest struct {
	Token           string `json:"token"`
	Name            string `json:"name"`
	IP              string `json:"ip"`
	Port            int    `json:"port"`
	PublicKeyPEM    []byte `json:"public_key_pem"`
	ProtocolVersion int    `json:"protocol_version"` // the version the node will speak: the cluster's
	StateFormat     int    `json:"state_format"`
	// Version and Level are the joining build's version and feature level (package
	// internal/version); release 0.1.0 sends neither, and ignores them when it relays.
	Version string `json:"version,omitempty"`
	Level   int    `json:"level,omitempty"`
	// ProtocolMin and ProtocolMax are the range the joining node can speak; absent (0)
	// from a first-release node, which speaks exactly ProtocolVersion.
	ProtocolMin int `json:"protocol_min,omitempty"`
	ProtocolMax int `json:"protocol_max,omitempty"`
}

// Admission is the master's answer to an admission or re-admission: the node's CID and
// certificate (none on a re-admission), and the members it must trust until its own
// state machine has caught up.
type Admission struct {
	ClusterID     string       `json:"cluster_id"`
	Epoch         uint64       `json:"epoch"`
	CID           uint64       `json:"cid"`
	CertPEM       []byte       `json:"cert_pem"`
	CACertPEM     []byte       `json:"ca_cert_pem"`
	Members       []fsm.Member `json:"members"`
	Index         uint64       `json:"index"`
	MasterAddress string       `json:"master_address"`
}

// Membership is the answer of JoinPathMembership: how the answering node sees a
// certificate. A node that is itself removed or fenced answers the zero value.
type Membership struct {
	ClusterID string `json:"cluster_id"`
	Epoch     uint64 `json:"epoch"`
	Member    bool   `json:"member"`
	CID       uint64 `json:"cid"`
	// Fenced is true when the member was left in an older epoch by a forced promotion.
	Fenced bool `json:"fenced"`
	// Applied is the answering node's state-machine index.
	Applied uint64 `json:"applied"`
	// Master is the answering node's master, if it knows one.
	MasterCID  uint64 `json:"master_cid,omitempty"`
	MasterName string `json:"master_name,omitempty"`
	MasterIP   string `json:"master_ip,omitempty"`
}

// ApplyResult is the answer of PathApply and PathRecordCert.
type ApplyResult struct {
	Index   uint64 `json:"index"`
	Version uint64 `json:"version"`
	CID     uint64 `json:"cid"`
}

// ReadIndexResult is the answer of PathReadIndex: the master's commit index, confirmed
// by a quorum.
type ReadIndexResult struct {
	Index uint64 `json:"index"`
}

// TransferRequest names the member that asks for leadership (PathTransfer).
type TransferRequest struct {
	CID uint64 `json:"cid"`
}

// FingerprintRequest names a certificate (JoinPathMembership).
type FingerprintRequest struct {
	Fingerprint string `json:"fingerprint"`
}

// ReadmitRequest asks the master to take a fenced member back: the body of
// JoinPathReadmit (where Fingerprint is ignored: the master knows the node by the
// certificate it presents) and of PathReadmit (where the member that received the
// request vouches for the fingerprint it saw).
//
// Version and Level are the fenced node's build (package internal/version), which the
// master checks against the cluster version as at a join. Release 0.1.0 sends "{}" on
// JoinPathReadmit and only the fingerprint on PathReadmit, and ignores the other fields
// of either: no level is level 1.
type ReadmitRequest struct {
	Fingerprint string `json:"fingerprint"`
	Version     string `json:"version,omitempty"`
	Level       int    `json:"level,omitempty"`
}

// CertRecord asks the master to publish a member's renewed certificate (PathRecordCert).
type CertRecord struct {
	CID     uint64 `json:"cid"`
	CertPEM []byte `json:"cert_pem"`
}
