package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/internal/connlimit"
	"github.com/pmgcm/pmgcm/smtpd"
	"github.com/pmgcm/pmgcm/transport"
)

// The timeouts of the join channel, which anyone who reaches the cluster port may open
// (no certificate needed), and of the control socket.
const (
	// joinReadTimeout bounds reading a join request (header and body; they are small).
	joinReadTimeout = 10 * time.Second
	// joinWriteTimeout bounds a join request's handling and reply: admitting a node waits
	// for the master for up to 30 s (serveAdmit).
	joinWriteTimeout = time.Minute
	// joinIdleTimeout closes a join connection that waits for its next request.
	joinIdleTimeout = 5 * time.Second
	// joinLifetime closes a join connection however busy it is.
	joinLifetime = 2 * time.Minute
	// memberIdleTimeout closes a member's RPC or mail connection that waits for its next
	// request; longer than the clients' own idle timeout (90 s, transport.HTTPClient and
	// mailrepl.ClientIdleTimeout), so that the client, not the server, closes a kept-alive
	// connection.
	memberIdleTimeout = 2 * time.Minute
	// The metrics server's timeouts: a scrape reads one small request and writes the
	// metrics; Prometheus keeps the connection between scrapes.
	metricsReadTimeout  = 10 * time.Second
	metricsWriteTimeout = 30 * time.Second
	metricsIdleTimeout  = time.Minute
)

// listenerLimits are the caps of the node's listeners, sized from its descriptor limit
// at start (see connlimit.Plan).
type listenerLimits struct {
	budget           connlimit.Budget
	smtpMax, smtpPer int
	join, control    *connlimit.Limiter
	metrics          *connlimit.Limiter
	// joinTokens backs off sources that give wrong join tokens (jointhrottle.go).
	joinTokens *joinThrottle
}

// planLimits reads the descriptor limit, sizes the listeners' caps from it, logs the
// budget and warns about configured caps it cannot hold.
func planLimits(cfg Config, logger hclog.Logger) (*listenerLimits, error) {
	nofile, err := connlimit.ReadNoFile()
	if err != nil {
		nofile = 1024
		logger.Warn("cannot read the descriptor limit; sizing the connection caps for 1024", "error", err)
	}
	b := connlimit.Plan(nofile)
	l := &listenerLimits{budget: b, joinTokens: newJoinThrottle(logger.Named("join"))}
	var warn string
	l.smtpMax, l.smtpPer, warn = b.SMTPCaps(cfg.SMTPMaxConnections, cfg.SMTPMaxConnectionsPerIP)
	named := logger.Named("limits")
	if l.join, err = connlimit.New(connlimit.Config{Name: "join", Max: b.Join, MaxPerSource: b.JoinPerSource,
		MaxLifetime: joinLifetime, Refuse: refuseHTTP("join channel"), Logger: named}); err != nil {
		return nil, err
	}
	if l.control, err = connlimit.New(connlimit.Config{Name: "control", Max: b.Control,
		Refuse: refuseHTTP("control socket"), Logger: named}); err != nil {
		return nil, err
	}
	if l.metrics, err = connlimit.New(connlimit.Config{Name: "metrics", Max: b.Metrics, MaxPerSource: b.MetricsPerSource,
		Refuse: refuseHTTP("metrics server"), Logger: named}); err != nil {
		return nil, err
	}
	smtp := "off"
	if cfg.SMTPPort > 0 {
		smtp = fmt.Sprintf("%d (%d per IP)", l.smtpMax, l.smtpPer)
	}
	logger.Info("descriptor budget", "nofile", nofile, "smtp-max-connections", smtp,
		"cluster-max-pending-handshakes", fmt.Sprintf("%d (%d per IP)", b.Handshake, b.HandshakePerSource),
		"join-max-connections", fmt.Sprintf("%d (%d per IP)", b.Join, b.JoinPerSource),
		"control-max-connections", b.Control,
		"metrics-max-connections", fmt.Sprintf("%d (%d per IP)", b.Metrics, b.MetricsPerSource), "reserved", b.Reserved)
	if warn != "" {
		logger.Warn(warn)
	}
	if b.Low() {
		logger.Warn(fmt.Sprintf("the descriptor limit %d is low: a flood of connections leaves little for Raft and the stores; raise it to at least %d (ulimit -n, LimitNOFILE= of the service)",
			nofile, connlimit.MinNoFile))
	}
	return l, nil
}

// close writes the refusal summaries still pending.
func (l *listenerLimits) close() {
	if l != nil {
		l.join.Close()
		l.control.Close()
		l.metrics.Close()
		l.joinTokens.close()
	}
}

// smtp sets the SMTP intake's caps and timeouts.
func (l *listenerLimits) smtp(cfg *smtpd.Config, c Config) {
	cfg.MaxConnections, cfg.MaxConnectionsPerSource = l.smtpMax, l.smtpPer
	cfg.ReadTimeout, cfg.SessionTimeout = c.SMTPIdleTimeout, c.SMTPSessionTimeout
}

// mux sets the cluster port's caps on connections before routing.
func (l *listenerLimits) mux(cfg *transport.Config) {
	cfg.MaxPending, cfg.MaxPendingPerSource = l.budget.Handshake, l.budget.HandshakePerSource
}

// channelServer returns the HTTP server of a mux channel and the listener it serves. The
// join channel, open to callers without a certificate, gets a connection cap and
// timeouts on every stage; the member channels (a current member's certificate, checked
// at the handshake) a header and an idle timeout.
func (l *listenerLimits) channelServer(ch transport.Channel, h http.Handler, ln net.Listener) (*http.Server, net.Listener) {
	srv := &http.Server{Handler: h, ConnContext: transport.ConnContext, ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout: memberIdleTimeout}
	if ch == transport.ChanJoin {
		srv.ReadTimeout, srv.WriteTimeout, srv.IdleTimeout = joinReadTimeout, joinWriteTimeout, joinIdleTimeout
		ln = l.join.Listen(ln)
	}
	return srv, ln
}

// controlIdleTimeout closes a control-socket connection idle between requests.
const controlIdleTimeout = 10 * time.Second

// controlServer returns the control socket's server and the listener it serves. A
// request has a header timeout but no bound on its length (a join or a restore runs for
// long, a watch streams). A long-lived client (the bench, a monitoring agent) keeps its
// connections between requests; one idle for controlIdleTimeout is closed, so that a
// local client that leaks kept-alive connections (a new Go client per call, never
// closed) gives its slots back instead of holding them until it exits.
func (l *listenerLimits) controlServer(h http.Handler, ln net.Listener) (*http.Server, net.Listener) {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: controlIdleTimeout}
	return srv, l.control.Listen(ln)
}

// metricsServer returns the metrics server, with its cap and timeouts, and the listener
// it serves.
func (l *listenerLimits) metricsServer(h http.Handler, ln net.Listener) (*http.Server, net.Listener) {
	return &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: metricsReadTimeout,
		WriteTimeout: metricsWriteTimeout, IdleTimeout: metricsIdleTimeout}, l.metrics.Listen(ln)
}

// refuseHTTP answers a connection over a cap with a 503 and an api.Error, so that the
// caller is told why instead of seeing a reset.
func refuseHTTP(what string) func(net.Conn, error) {
	return func(c net.Conn, reason error) {
		msg := "too many connections to the " + what + ", try again later"
		if errors.Is(reason, connlimit.ErrPerSource) {
			msg = "too many connections to the " + what + " from your address, try again later"
		}
		body, _ := json.Marshal(api.Error{Code: api.CodeUnavailable, Message: msg})
		_, _ = fmt.Fprintf(c, "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
			len(body), body)
	}
}
