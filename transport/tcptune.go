package transport

import (
	"net"
	"time"
)

// DefaultRTOMin is the minimum TCP retransmission timeout of cluster connections.
//
// Linux never retransmits a lost segment sooner than 200 ms (TCP_RTO_MIN; also the
// tail-loss probe of a lone segment waits that long), however short the round trip.
// Raft's heartbeats are single request/response segments on one connection per peer,
// and the master steps down when it has not heard from a quorum within the leader lease
// (100 ms by default). So one lost packet on each follower's connection within the same
// 200 ms stalls both past the lease: the master deposes itself, with the followers and
// the network healthy. That, not the timers, made leadership churn on a lossy link
// (issue 14). 20 ms is well above a LAN's round trip (the kernel still uses srtt +
// 4*rttvar when that is longer), so retransmits stay rare and are not spurious.
const DefaultRTOMin = 20 * time.Millisecond

// tuneConn applies the cluster connection settings to a freshly dialed or accepted TCP
// connection: the minimum retransmission timeout (rtoMin <= 0 leaves the kernel's).
// It is best effort: a kernel without per-socket RTO (before Linux 6.15) or another OS
// keeps its default, which only makes failover steadiness worse, not connections fail.
func tuneConn(c net.Conn, rtoMin time.Duration) {
	tc, ok := c.(*net.TCPConn)
	if !ok || rtoMin <= 0 {
		return
	}
	_ = setRTOMin(tc, rtoMin)
}
