package api

import "time"

// Paths of the operator tools on the control socket.
const (
	// PathCheck answers GET [?verify=1] with a stream of JSON lines: CheckEvent values,
	// progress first, the last one carrying the CheckReport.
	PathCheck = "/v1/check"
	// PathMaintenance answers POST MaintenanceRequest with a MaintenanceResponse.
	PathMaintenance = "/v1/maintenance"
)

// HeaderSizeEstimate carries, on the answer of PathBackup, about how many bytes the
// backup will be: for a progress line, never a Content-Length.
const HeaderSizeEstimate = "X-Pmgcm-Size-Estimate"

// StateMaintenance is the state of a node taken out of service with `pmgcm maintenance
// on`: it takes no mail and never stays master.
const StateMaintenance = "M"

// CheckEvent is one line of the PathCheck stream: Progress while the check runs, then
// Report (or Error) once.
type CheckEvent struct {
	Progress *CheckProgress `json:"progress,omitempty"`
	Report   *CheckReport   `json:"report,omitempty"`
	Error    *Error         `json:"error,omitempty"`
}

// CheckProgress says how far a check has come.
type CheckProgress struct {
	// Phase is "config" or "mail" (or "recheck", the second look at differences).
	Phase string `json:"phase"`
	// Checked and Total count the local node's messages (Total 0: unknown).
	Checked int64 `json:"checked"`
	Total   int64 `json:"total"`
	// NodesDone and Nodes count the nodes that have answered the phase.
	NodesDone int `json:"nodes_done"`
	Nodes     int `json:"nodes"`
}

// CheckReport is what `pmgcm check -o json` prints.
type CheckReport struct {
	// Consistent is true when every node answered and nothing differs.
	Consistent bool `json:"consistent"`
	// Index is the applied index every node's configuration was compared at.
	Index uint64 `json:"index"`
	// Verified is true when every body was re-hashed (--verify-bodies), false when only
	// its presence and size were compared with the metadata.
	Verified bool `json:"verified"`
	// Since: messages received before it (about to be purged by retention) were not
	// compared; zero when retention is off.
	Since           time.Time         `json:"since,omitzero"`
	Nodes           []CheckNode       `json:"nodes"`
	Differences     []CheckDifference `json:"differences"`
	DurationSeconds float64           `json:"duration_seconds"`
}

// CheckNode is one node's digests.
type CheckNode struct {
	CID  uint64 `json:"cid"`
	Name string `json:"name"`
	IP   string `json:"ip"`
	// ConfigSHA256 is the digest of the node's state machine at CheckReport.Index.
	ConfigSHA256 string `json:"config_sha256,omitempty"`
	Entries      int    `json:"entries"`
	// MailSHA256 digests the node's (id, sha256, state, body) list of live messages.
	MailSHA256 string `json:"mail_sha256,omitempty"`
	Messages   int    `json:"messages"`
	// Error says why the node could not be compared (down, too old, timed out).
	Error string `json:"error,omitempty"`
}

// CheckDifference is one thing that differs, where, and what repairs it.
type CheckDifference struct {
	// What is "config", "mail" or "node" (a node that could not be compared).
	What string `json:"what"`
	CID  uint64 `json:"cid"`
	Node string `json:"node"`
	// ID is the message, for mail differences.
	ID     string `json:"id,omitempty"`
	Detail string `json:"detail"`
	// Repair is the command that repairs it.
	Repair string `json:"repair"`
}

// MaintenanceRequest takes a node out of service (On) or back. CID 0 is the local node.
type MaintenanceRequest struct {
	On  bool   `json:"on"`
	CID uint64 `json:"cid,omitempty"`
}

// MaintenanceResponse says where the node stands now.
type MaintenanceResponse struct {
	CID  uint64 `json:"cid"`
	Name string `json:"name"`
	On   bool   `json:"on"`
	// HandedOver names the CID that became master when the node gave mastership up.
	HandedOver uint64 `json:"handed_over,omitempty"`
	// Warning says what could not be done (no other voter to hand mastership to).
	Warning string `json:"warning,omitempty"`
}

// BackupStatus is the state of the scheduled backups of a node (Node.Backup).
type BackupStatus struct {
	Dir string `json:"dir"`
	// Last is the time of the last attempt, LastSuccess of the last one that worked.
	Last        time.Time `json:"last,omitzero"`
	LastSuccess time.Time `json:"last_success,omitzero"`
	// File and Size describe the last backup written.
	File string `json:"file,omitempty"`
	Size int64  `json:"size,omitempty"`
	// Error is set when the last attempt failed.
	Error string `json:"error,omitempty"`
}
