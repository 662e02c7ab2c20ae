package api

// Paths of the operator tools (health, diagnostics).
const (
	// PathReport answers GET with a diagnostics bundle (tar.gz) gathered from every
	// reachable node, with no secret in it.
	PathReport = "/v1/report"
	// PathHealthMail and PathHealthCluster are served on --metrics-addr (plain HTTP, for
	// load balancers and monitoring), answering a Health with 200 when ok, else 503.
	PathHealthMail    = "/health/mail"
	PathHealthCluster = "/health/cluster"
)

// CodeDiskFull is the error code of a write refused because the node's disk guard has
// tripped (free space below --min-free-disk).
const CodeDiskFull = "disk_full"

// Health is the answer of PathHealthMail and PathHealthCluster.
type Health struct {
	OK bool `json:"ok"`
	// Reasons say why OK is false; empty when it is true.
	Reasons []string `json:"reasons"`
}

// DiskGuard is a node's free-space guard (--min-free-disk) as the node reads it.
type DiskGuard struct {
	// Active is true while free space is below the threshold: SMTP answers 452 and
	// configuration writes through the node are refused.
	Active         bool    `json:"active"`
	FreeBytes      uint64  `json:"free_bytes"`
	TotalBytes     uint64  `json:"total_bytes"`
	FreePercent    float64 `json:"free_percent"`
	ThresholdBytes uint64  `json:"threshold_bytes"`
	// MinFree is the setting as given, e.g. "5%" or "500MiB".
	MinFree string `json:"min_free"`
	// Error says why the free space could not be read; empty when it could.
	Error string `json:"error,omitempty"`
}
