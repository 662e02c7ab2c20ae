package cluster

// PathReport answers GET, on any member, with the node's diagnostics report for pmgcm
// report (JSON of the daemon's own type, bounded by the caller). It came after protocol
// 2 without a version bump: it changes nothing, and a node of the first release (1ca55cd)
// answers 404, which the caller records as "not available (older version)".
const PathReport = "/rpc/v1/report"
