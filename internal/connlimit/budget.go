package connlimit

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// Postfix's defaults, which the SMTP caps follow when the descriptor budget allows:
// smtpd_client_connection_count_limit (per client) and default_process_limit (total).
const (
	PostfixMaxConnections          = 100
	PostfixMaxConnectionsPerClient = 50
)

// Upper bounds of the other listeners' caps, however many descriptors there are.
const (
	maxHandshakeCap = 1024 // connections between accept and routing on the cluster port
	maxJoinCap      = 256  // join-channel connections (HTTP, no certificate needed)
	maxControlCap   = 64   // control-socket connections
	maxMetricsCap   = 16   // metrics-server connections (Prometheus scrapers)
)

// MinNoFile is the descriptor limit below which the node's caps are at their floor and
// the start-up log asks to raise it.
const MinNoFile = 256

// Budget is how a node's descriptors are shared among its listeners. Every cap is a
// number of connections open at once; what is left of NoFile (Reserved) is for Raft and
// the other members' connections, the stores' files (bbolt, mail), the log and the
// outgoing dials.
type Budget struct {
	// NoFile is the descriptor limit (RLIMIT_NOFILE, soft) the shares were made from.
	NoFile uint64
	// Reserved is what the caps leave for everything else.
	Reserved int
	// SMTP is the most SMTP connections the budget allows; SMTPDefault and
	// SMTPPerSourceDefault the caps when none is configured (Postfix's, or less).
	SMTP, SMTPDefault, SMTPPerSourceDefault int
	// Handshake and HandshakePerSource cap the cluster port's connections that are not
	// routed yet (TLS handshake and channel byte).
	Handshake, HandshakePerSource int
	// Join and JoinPerSource cap the join channel's connections.
	Join, JoinPerSource int
	// Control caps the control socket's connections.
	Control int
	// Metrics and MetricsPerSource cap the metrics server's connections (--metrics-addr).
	Metrics, MetricsPerSource int
}

// ReadNoFile returns the soft descriptor limit of this process (RLIMIT_NOFILE). The Go
// runtime raises the soft limit to the hard one at start-up, so this is the hard limit
// the process was started with, unless the process lowered it since.
func ReadNoFile() (uint64, error) {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return 0, fmt.Errorf("read the descriptor limit (RLIMIT_NOFILE): %w", err)
	}
	return rl.Cur, nil
}

// Plan shares nofile descriptors among the listeners: a quarter of them plus 64 stay
// reserved, and of the rest SMTP may use one half, the cluster port's handshakes a
// quarter, the join channel and the control socket an eighth each, the metrics server a
// sixteenth from the reserve, each within its upper bound and never below a small floor
// (so a node with a tiny limit still works, if poorly).
func Plan(nofile uint64) Budget {
	n := int(min(nofile, 1<<24))
	b := Budget{NoFile: nofile}
	avail := max(n-(64+n/4), 0)
	b.SMTP = max(avail/2, 4)
	b.Handshake = clamp(avail/4, 8, maxHandshakeCap)
	b.Join = clamp(avail/8, 4, maxJoinCap)
	b.Control = clamp(avail/8, 4, maxControlCap)
	b.Metrics = clamp(avail/16, 4, maxMetricsCap)
	b.MetricsPerSource = max(b.Metrics/2, 2)
	b.Reserved = n - b.SMTP - b.Handshake - b.Join - b.Control - b.Metrics
	b.SMTPDefault = min(PostfixMaxConnections, b.SMTP)
	b.SMTPPerSourceDefault = min(PostfixMaxConnectionsPerClient, max(b.SMTPDefault/2, 1))
	// A member opens a handful of connections at once (Raft, RPC, mail replication), each
	// through its handshake in milliseconds: a few slots per source suffice for it, and
	// one source cannot take the pool.
	b.HandshakePerSource = min(max(b.Handshake/8, 8), b.Handshake)
	b.JoinPerSource = min(max(b.Join/4, 4), b.Join)
	return b
}

// Low reports whether the descriptor limit is below MinNoFile.
func (b Budget) Low() bool { return b.NoFile < MinNoFile }

// SMTPCaps returns the SMTP caps to use for the configured ones (zero: the default), and
// a warning for each configured cap that had to be lowered ("" when none was).
func (b Budget) SMTPCaps(max, perSource int) (gotMax, gotPer int, warning string) {
	gotMax, gotPer = b.SMTPDefault, b.SMTPPerSourceDefault
	if max > 0 {
		gotMax = max
		if max > b.SMTP {
			gotMax = b.SMTP
			warning = fmt.Sprintf("--smtp-max-connections %d is more than the descriptor limit leaves for SMTP (%d of %d): using %d; raise the limit (ulimit -n, LimitNOFILE= of the service) to allow more",
				max, b.SMTP, b.NoFile, b.SMTP)
		}
		if perSource == 0 {
			gotPer = min(gotPer, gotMax)
		}
	}
	if perSource > 0 {
		gotPer = perSource
		if perSource > gotMax {
			gotPer = gotMax
			w := fmt.Sprintf("--smtp-max-connections-per-ip %d is more than the SMTP cap %d: using %d", perSource, gotMax, gotMax)
			if warning != "" {
				warning += "; "
			}
			warning += w
		}
	}
	gotPer = min(gotPer, gotMax)
	return gotMax, gotPer, warning
}

func clamp(v, lo, hi int) int { return min(max(v, lo), hi) }
