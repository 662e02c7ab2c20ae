package daemon

import "github.com/pmgcm/pmgcm/cluster"

// What the join channel tells a caller that presents no certificate.
//
// JoinInfo (cluster.JoinPathInfo) is read by a joining node, of this build or of the
// first release (1ca55cd): its protocol version and state format for the compatibility
// check, and its cluster ID and node name for the fingerprint prompt ("the master at
// ADDR (cluster ID, node NAME) presents fingerprint FP"). Those two are also in the
// certificate the node presents to any TLS client (its subject, and its issuer, the
// cluster CA "pmgcm cluster CA <ID>"), so they stay. The node's CID is read by neither
// and is not told.
//
// Membership (cluster.JoinPathMembership) is how a node learns that it was removed or
// fenced; it asks about its own certificate, and neither this build nor the first
// release presents that certificate on the join channel, so the answer cannot depend on
// it. Both read the cluster ID, the epoch, whether the certificate is a member, its CID
// (a node that restarts in the middle of a certificate renewal asks whether its new
// certificate is already its own, rotate.go resolveRenewal) and whether it is fenced,
// and the applied index (removal is judged against the node's join index). The master's
// CID, name and address are read only by a fenced node (to name the master `pmgcm sync
// --master_ip` needs), so they are told only about a fenced member's certificate.

// maskJoinInfo drops what a joining node does not read.
func maskJoinInfo(info cluster.JoinInfo) cluster.JoinInfo {
	info.CID = 0
	return info
}

// maskMembership drops what a node checking its own standing does not read.
func maskMembership(m cluster.Membership) cluster.Membership {
	if !m.Fenced {
		m.MasterCID, m.MasterName, m.MasterIP = 0, "", ""
	}
	return m
}
