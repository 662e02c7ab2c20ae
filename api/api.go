// Package api defines the JSON types and paths of the control socket: the HTTP+JSON API
// that pmgclusterd serves on its unix socket and that the pmgcm CLI uses.
//
// It owns only wire types and constants. It must never import any other package of this
// project, so that both the daemon and the CLI can depend on it.
package api

import (
	"fmt"
	"time"
)

// Paths of the control-socket API. Keys travel in the "key" query parameter so that
// slash-separated keys need no path escaping.
const (
	// PathStatus answers GET with a Status.
	PathStatus = "/v1/status"
	// PathCreate answers POST with a CreateResponse.
	PathCreate = "/v1/cluster/create"
	// PathConfig answers GET ?key=K with the raw value (header HeaderVersion),
	// PUT ?key=K (body: raw value) with a WriteResponse, DELETE ?key=K with a WriteResponse.
	// GET takes stale=1 (see HeaderStale); PUT and DELETE take if_version=N
	// (compare-and-set: N = 0 means "only if absent"), answering CodeConflict with
	// Error.Version = the current version on a mismatch.
	PathConfig = "/v1/config"
	// PathConfigList answers GET ?prefix=P with a ConfigList; it takes stale=1 too.
	PathConfigList = "/v1/config/list"
	// PathConfigWatch answers GET ?prefix=P&from=V[&wait=DURATION] with a WatchResponse:
	// the changes under P with a version above V, waiting (long poll, default 25s, at
	// most 5m) until there is one. An empty Events list means the wait ran out.
	PathConfigWatch = "/v1/config/watch"
	// PathJoinProbe answers POST JoinProbeRequest with a JoinProbe: what the given master
	// presents, so the operator can check its fingerprint before trusting it.
	PathJoinProbe = "/v1/cluster/join/probe"
	// PathJoin answers POST JoinRequest with a JoinResponse once the master has admitted
	// this node and it has started to catch up; the CLI then follows status until state A.
	PathJoin = "/v1/cluster/join"
	// PathJoinCmd answers GET with a JoinCmd; POST ?rotate=1 replaces the join token first,
	// with &ttl=D (a Go duration) by one that expires after D.
	PathJoinCmd = "/v1/cluster/join-cmd"
	// PathDelete answers POST DeleteRequest with a DeleteResponse.
	PathDelete = "/v1/cluster/delete"
	// PathPromote answers POST PromoteRequest with a PromoteResponse once this node is
	// the master.
	PathPromote = "/v1/cluster/promote"
	// PathQuarantine answers GET [?from=SUBSTRING][&to=SUBSTRING][&state=STATE] with a
	// JSON array of QuarantineMessage, newest first.
	PathQuarantine = "/v1/quarantine"
	// PathQuarantineShow answers GET ?id=ID with the raw message (headers and body),
	// header HeaderSHA256 carrying its checksum.
	PathQuarantineShow = "/v1/quarantine/show"
	// PathQuarantineDelete and PathQuarantineRelease answer POST ?id=ID with the
	// QuarantineMessage in its new state. The change replicates to every node.
	PathQuarantineDelete  = "/v1/quarantine/delete"
	PathQuarantineRelease = "/v1/quarantine/release"
	// PathBackup answers GET [?mail=1] with a backup file (package backup's format) of
	// the configuration at one Raft index, and with mail=1 the quarantine too.
	PathBackup = "/v1/backup"
	// PathRestore answers POST (body: a backup file) with a RestoreResponse, on a node in
	// no cluster only; a file that does not verify changes nothing.
	PathRestore = "/v1/restore"
	// PathDebugPartition answers POST PartitionRequest: it cuts the node's cluster
	// port off from the given hosts (an empty list heals). It exists only on a daemon
	// started with --fault-injection, for drills and tests.
	PathDebugPartition = "/v1/debug/partition"
	// PathSync answers POST SyncRequest with a SyncResponse once this node has caught up
	// with (or been re-admitted by) the master.
	PathSync = "/v1/cluster/sync"
	// PathUpdateFingerprints answers POST [?all=1] with an UpdateFingerprintsResponse: it
	// renews this node's certificate (with all=1, on the master: every node's) and
	// publishes the new fingerprints through the Raft log, without a restart.
	PathUpdateFingerprints = "/v1/cluster/update-fingerprints"
)

// HeaderSHA256 carries the hex SHA-256 of a quarantined message.
const HeaderSHA256 = "X-Pmgcm-Sha256"

// HeaderVersion carries the version (Raft index of the last change) of a config value.
const HeaderVersion = "X-Pmgcm-Version"

// Headers of a stale read (stale=1): served from the node's own state without asking the
// master, so it works without quorum but may miss recent writes. HeaderStale is "1" on
// such an answer; HeaderAppliedIndex is the node's applied index; HeaderLastContact is the
// time since the node last heard from a master as a Go duration ("0s" on the master,
// "never" when it has not heard from one since it started).
const (
	HeaderStale        = "X-Pmgcm-Stale"
	HeaderAppliedIndex = "X-Pmgcm-Applied-Index"
	HeaderLastContact  = "X-Pmgcm-Last-Contact"
)

// Roles and states shown by status, as in the manual's table.
const (
	RoleMaster = "master"
	RoleNode   = "node"
	RoleNone   = "-"

	StateActive  = "A"
	StateSyncing = "S"
	StateDown    = "D"
)

// Error codes carried in Error.Code. The CLI maps them to its messages and exit codes.
const (
	CodeBadRequest    = "bad_request"
	CodeNotFound      = "not_found"
	CodeNoCluster     = "no_cluster"
	CodeClusterExists = "cluster_exists"
	CodeNotLeader     = "not_leader"
	CodeNoQuorum      = "no_quorum"
	CodeConflict      = "version_conflict"
	CodeTooLarge      = "too_large"
	CodeUnavailable   = "unavailable"
	// CodeUnknownOutcome: the master changed or stopped while the request was in flight;
	// it may or may not have taken effect.
	CodeUnknownOutcome = "unknown_outcome"
	CodeBadToken       = "bad_token"
	// CodeTokenExpired: the join token was right but has expired.
	CodeTokenExpired = "token_expired"
	// CodeThrottled: too many wrong join tokens came from the caller's address; it is
	// refused for a while.
	CodeThrottled    = "throttled"
	CodeFingerprint  = "fingerprint_mismatch"
	CodeUnreachable  = "unreachable"
	CodeIncompatible = "incompatible"
	CodeMemberExists = "member_exists"
	CodeRemoved      = "removed"
	CodeFenced       = "fenced"
	CodeBehind       = "behind"
	CodeInternal     = "internal"
	// CodeReadFailed: a linearizable read could not be confirmed with a master (it lost
	// leadership or stopped during the read). A read changes nothing: retry it.
	CodeReadFailed = "read_failed"

	// CodeShuttingDown: the node is stopping and took nothing of the request; retry on
	// another node (a forwarding node retries at the next master by itself).
	CodeShuttingDown = "shutting_down"
)

// Error is the body of every non-2xx answer.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"error"`
	// Hint says what the operator can do next; empty when there is nothing to add.
	Hint string `json:"hint,omitempty"`
	// Version is the current version of the key on a CodeConflict (0: absent).
	Version uint64 `json:"version,omitempty"`
}

// Status is the answer of PathStatus, and what `pmgcm status -o json` prints.
type Status struct {
	// Cluster is nil on a node that is in no cluster.
	Cluster *Cluster `json:"cluster"`
	Nodes   []Node   `json:"nodes"`
}

// Cluster is the cluster identity.
type Cluster struct {
	ID        string    `json:"id"`
	Epoch     uint64    `json:"epoch"`
	CreatedAt time.Time `json:"created_at"`
	// LeaderCID is the CID of the current master, 0 when there is none.
	LeaderCID uint64 `json:"leader_cid"`
	// Version is the cluster version: the feature level every member supports, as
	// recorded in the replicated log (1, release 0.1.0, until the master records one).
	// Absent from the answers of release 0.1.0 nodes.
	Version int `json:"version,omitempty"`
	// Warnings are cluster-wide conditions the operator must know, e.g. lost quorum.
	Warnings []string `json:"warnings,omitempty"`
}

// Node is one row of the status table.
type Node struct {
	CID   uint64 `json:"cid"`
	Name  string `json:"name"`
	IP    string `json:"ip"`
	Port  int    `json:"port"`
	Role  string `json:"role"`
	State string `json:"state"`
	// Error says why the node is in state D.
	Error string `json:"error,omitempty"`
	// Reason says why a node that is up is not in state A (or not master although
	// Raft on it still thinks so): it knows no master, it has not applied its own
	// admission yet, it has seen a newer term, its disk is full. Empty otherwise;
	// nodes before this field never send it.
	Reason      string `json:"reason,omitempty"`
	Fingerprint string `json:"fingerprint,omitempty"`
	// CertExpires is when the node's certificate expires, as the node itself reports
	// it; zero (absent) when the node did not answer. Renew with update-fingerprints.
	CertExpires time.Time `json:"cert_expires,omitzero"`
	// Suffrage is "voter" or "nonvoter" (Raft).
	Suffrage     string `json:"suffrage,omitempty"`
	Term         uint64 `json:"term,omitempty"`
	LastIndex    uint64 `json:"last_index,omitempty"`
	LastLogTerm  uint64 `json:"last_log_term,omitempty"`
	AppliedIndex uint64 `json:"applied_index,omitempty"`
	// MasterCID is the master this node itself follows, 0 when it knows none.
	MasterCID uint64 `json:"master_cid,omitempty"`
	// Local is true for the node that answered the status request.
	Local bool `json:"local,omitempty"`
	// Host metrics, read live on the node; absent when the node is down.
	Sys *SysInfo `json:"sys,omitempty"`
	// Mail is the node's mail store and replication backlog; absent when unknown.
	Mail *MailStatus `json:"mail,omitempty"`
	// Version is the node's build version ("<=0.1.0" for a node that reports none: it
	// predates versions), and Level its feature level; both absent when the node is down.
	Version string `json:"version,omitempty"`
	Level   int    `json:"level,omitempty"`
	// DiskGuard is the node's free-space guard; absent from nodes that have none.
	DiskGuard *DiskGuard `json:"disk_guard,omitempty"`
	// Clock is the node's wall clock when it answered; zero (absent) from older nodes.
	Clock time.Time `json:"clock,omitzero"`
	// ClockOffsetSeconds is the node's clock minus the master's, estimated from the
	// status request's round trip; absent when either clock is unknown.
	ClockOffsetSeconds *float64 `json:"clock_offset_seconds,omitempty"`
}

// MailStatus is a node's quarantine and how far its copy lags the other nodes'.
type MailStatus struct {
	Messages int64 `json:"messages"`
	Bytes    int64 `json:"bytes"`
	// BacklogMessages and BacklogBytes are what this node still has to receive from the
	// other nodes; the node is in state S while they are not zero.
	BacklogMessages int64 `json:"backlog_messages"`
	BacklogBytes    int64 `json:"backlog_bytes"`
	// BacklogKnown is false until every other node has been asked what it has: until
	// then the node is in state S too.
	BacklogKnown bool `json:"backlog_known"`
}

// SysInfo holds host metrics read live on a node.
type SysInfo struct {
	UptimeSeconds       float64 `json:"uptime_seconds"`
	DaemonUptimeSeconds float64 `json:"daemon_uptime_seconds"`
	Load1               float64 `json:"load1"`
	MemPercent          float64 `json:"mem_percent"`
	DiskPercent         float64 `json:"disk_percent"`
}

// CreateResponse is the answer of PathCreate.
type CreateResponse struct {
	ClusterID   string `json:"cluster_id"`
	CID         uint64 `json:"cid"`
	Fingerprint string `json:"fingerprint"`
}

// WriteResponse is the answer of a config write.
type WriteResponse struct {
	Key string `json:"key"`
	// Version is the Raft index of the write.
	Version uint64 `json:"version"`
}

// ConfigEntry is one configuration entry in a listing.
type ConfigEntry struct {
	Key     string `json:"key"`
	Version uint64 `json:"version"`
	Size    int    `json:"size"`
	// Value holds the value when it is valid UTF-8; otherwise ValueBase64 holds it.
	Value       *string `json:"value,omitempty"`
	ValueBase64 string  `json:"value_base64,omitempty"`
}

// ConfigList is the answer of PathConfigList.
type ConfigList struct {
	Entries []ConfigEntry `json:"entries"`
}

// JoinProbeRequest asks what the node at Master presents.
type JoinProbeRequest struct {
	// Master is "ip" or "ip:port"; without a port this node's own cluster port is used.
	Master string `json:"master"`
}

// JoinProbe is what a master presents to a joining node.
type JoinProbe struct {
	// Address is the address that was contacted, "ip:port".
	Address     string `json:"address"`
	Fingerprint string `json:"fingerprint"`
	ClusterID   string `json:"cluster_id"`
	// Name and CID of the contacted node; it forwards the join if it is not the master.
	Name string `json:"name"`
	CID  uint64 `json:"cid"`
	// ProtocolVersion is the version the master's cluster runs at: this node's range of
	// protocol versions must contain it, and StateFormat must match, for a join.
	ProtocolVersion int `json:"protocol_version"`
	StateFormat     int `json:"state_format"`
}

// JoinRequest asks this node to join the cluster of Master. The daemon checks the master's
// certificate against Fingerprint (required) and sends Token.
type JoinRequest struct {
	Master      string `json:"master"`
	Fingerprint string `json:"fingerprint"`
	Token       string `json:"token"`
}

// JoinResponse says which CID the cluster gave this node.
type JoinResponse struct {
	ClusterID string `json:"cluster_id"`
	CID       uint64 `json:"cid"`
	Name      string `json:"name"`
	// MasterAddress is the address of the master that admitted the node.
	MasterAddress string `json:"master_address"`
}

// JoinCmd is the command that joins a new node to this cluster.
type JoinCmd struct {
	// Master is the master's address as `pmgcm join` takes it ("ip", or "ip:port" when
	// the master does not use the default port).
	Master      string `json:"master"`
	Fingerprint string `json:"fingerprint"`
	Token       string `json:"token"`
	// Expires is when the token stops admitting nodes; absent for one that never expires.
	Expires *time.Time `json:"expires,omitempty"`
	// Command is the whole line, with the token in the environment rather than on the
	// command line (where ps shows it): PMGCM_JOIN_TOKEN=<TOKEN> pmgcm join <master>
	// --fingerprint <FP>. The first release put it as --token <TOKEN> at the end.
	Command string `json:"command"`
}

// JoinCommandLine returns the join command for master, fingerprint and token, with the
// token in the environment variable PMGCM_JOIN_TOKEN (see JoinCmd.Command).
func JoinCommandLine(master, fingerprint, token string) string {
	return fmt.Sprintf("PMGCM_JOIN_TOKEN=%s pmgcm join %s --fingerprint %s", token, master, fingerprint)
}

// DeleteRequest asks to remove the node with CID from the cluster.
type DeleteRequest struct {
	CID uint64 `json:"cid"`
	// Force removes a dead node from a cluster that lost its quorum because of it (a
	// 2-node cluster whose peer died): this node becomes the only voter, as with a forced
	// promote, and every other member is fenced until `pmgcm sync` re-admits it.
	Force bool `json:"force,omitempty"`
}

// DeleteResponse names the removed node.
type DeleteResponse struct {
	CID  uint64 `json:"cid"`
	Name string `json:"name"`
	IP   string `json:"ip"`
	// TokenRotated is true when the join token was replaced after the removal (the
	// removed node knew it); false when it could not be (rotate it: pmgcm join-cmd
	// --rotate), or from a daemon of the first release, which never rotates it.
	TokenRotated bool `json:"token_rotated"`
}

// PromoteRequest asks to make this node the master.
type PromoteRequest struct {
	// Force makes this node the only voter of a cluster that lost its quorum, and starts
	// a new epoch that fences every other member.
	Force bool `json:"force,omitempty"`
}

// PromoteResponse says how this node became (or already was) the master.
type PromoteResponse struct {
	CID  uint64 `json:"cid"`
	Name string `json:"name"`
	// AlreadyMaster is true when this node was the master already; nothing changed.
	AlreadyMaster bool `json:"already_master,omitempty"`
	// Forced is true after a forced promotion; Epoch is then the new cluster epoch and
	// Fenced lists the CIDs left behind.
	Forced bool     `json:"forced,omitempty"`
	Epoch  uint64   `json:"epoch"`
	Fenced []uint64 `json:"fenced,omitempty"`
}

// SyncRequest asks this node to catch up with the master now, or, with MasterIP, to be
// re-admitted by the master of a newer epoch after a forced promotion fenced it.
type SyncRequest struct {
	MasterIP string `json:"master_ip,omitempty"`
}

// SyncResponse says what sync did.
type SyncResponse struct {
	// Readmitted is true when a fenced node was taken back by the master.
	Readmitted bool   `json:"readmitted,omitempty"`
	MasterCID  uint64 `json:"master_cid"`
	Epoch      uint64 `json:"epoch"`
	// AppliedIndex is the state-machine index this node has reached.
	AppliedIndex uint64 `json:"applied_index"`
}

// WatchEvent is one change of a configuration entry.
type WatchEvent struct {
	Key     string `json:"key"`
	Version uint64 `json:"version"`
	// Deleted is true when the key was deleted at Version; Value is then absent.
	Deleted bool `json:"deleted,omitempty"`
	// Value holds the value when it is valid UTF-8; otherwise ValueBase64 holds it.
	Value       *string `json:"value,omitempty"`
	ValueBase64 string  `json:"value_base64,omitempty"`
}

// WatchResponse is the answer of PathConfigWatch.
type WatchResponse struct {
	// Events are the changes in version order. Changes are coalesced: a key changed more
	// than once since From shows only its latest state.
	Events []WatchEvent `json:"events"`
	// Next is the version to pass as from in the next poll.
	Next uint64 `json:"next"`
	// Reset is true when From is older than the deletions the cluster still remembers:
	// Events then hold every entry under the prefix, and the watcher must drop any key of
	// its own view that is not among them.
	Reset bool `json:"reset,omitempty"`
}

// PartitionRequest lists the hosts (IP addresses) to cut this node off from.
type PartitionRequest struct {
	Hosts []string `json:"hosts"`
}

// Quarantine states.
const (
	MailQuarantined = "quarantined"
	MailReleased    = "released"
	MailDeleted     = "deleted"
)

// QuarantineMessage is one message of the replicated quarantine.
type QuarantineMessage struct {
	ID        string    `json:"id"`
	OriginCID uint64    `json:"origin_cid"`
	From      string    `json:"from"`
	To        []string  `json:"to"`
	Subject   string    `json:"subject"`
	Size      int64     `json:"size"`
	SHA256    string    `json:"sha256"`
	State     string    `json:"state"`
	Received  time.Time `json:"received"`
}

// RestoreResponse says what a restore loaded.
type RestoreResponse struct {
	// ClusterID and Index say where the backup was taken.
	ClusterID string `json:"cluster_id"`
	Index     uint64 `json:"index"`
	Entries   int    `json:"entries"`
	Mail      int    `json:"mail"`
}

// UpdateFingerprintsResponse is the answer of PathUpdateFingerprints: one entry per node
// asked to renew its certificate.
type UpdateFingerprintsResponse struct {
	Nodes []RenewedCert `json:"nodes"`
}

// RenewedCert is the outcome of one node's certificate renewal.
type RenewedCert struct {
	CID  uint64 `json:"cid"`
	Name string `json:"name"`
	IP   string `json:"ip"`
	// OldFingerprint is refused by every member once Fingerprint is published.
	OldFingerprint string    `json:"old_fingerprint"`
	Fingerprint    string    `json:"fingerprint,omitempty"`
	Expires        time.Time `json:"expires,omitzero"`
	// Error says why the node kept its certificate; empty on success.
	Error string `json:"error,omitempty"`
}
