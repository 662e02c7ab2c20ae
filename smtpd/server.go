package smtpd

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/hashicorp/go-hclog"

	"github.com/pmgcm/pmgcm/internal/connlimit"
)

// Store makes a message durable.
//
// Accept reads the message from r to its end, stores it, and returns only once the message
// is fsynced, with the id it was stored under. If reading r fails (the client went away, the
// message is over the size limit, the server is closing), Accept must return an error and
// keep nothing: smtpd acknowledges nothing in that case in any event. Accept is called
// concurrently, from one goroutine per SMTP connection.
type Store interface {
	Accept(from string, to []string, r io.Reader) (id string, err error)
}

// Policy is what the replicated configuration says about mail intake. It is read at the
// start of every mail transaction, from many goroutines at once.
type Policy interface {
	// RelayDomains are the domains whose recipients are accepted. An entry matches its
	// domain exactly, case-insensitively; an entry starting with "." (".example.com")
	// matches every subdomain of it instead (a.example.com, not example.com itself).
	// None: every recipient is refused.
	RelayDomains() []string
	// MaxSize is the largest message accepted, in bytes; zero or less means
	// DefaultMaxSize.
	MaxSize() int64
}

// Defaults of Config, and of Policy.MaxSize when it is not set.
const (
	// DefaultReadTimeout bounds the wait for a command line, and for each read of the
	// message data (RFC 5321 4.5.3.2 asks for at least 3 to 5 minutes).
	DefaultReadTimeout = 5 * time.Minute
	// DefaultWriteTimeout bounds the writing of each reply.
	DefaultWriteTimeout = time.Minute
	// DefaultMaxRecipients is the number of recipients per message; RFC 5321 4.5.3.1.8
	// asks servers to take at least 100. Past it, RCPT gets 452 and the client sends the
	// rest in another transaction.
	DefaultMaxRecipients = 100
	// DefaultMaxSize is the size limit when the Policy sets none (Postfix's default).
	DefaultMaxSize = 10240000
	// DefaultMaxConnections is the number of SMTP connections open at once (Postfix's
	// default_process_limit); past it a new connection is answered 421 and closed.
	DefaultMaxConnections = connlimit.PostfixMaxConnections
	// DefaultMaxConnectionsPerSource is the number of connections open at once from one
	// client IP address (Postfix's smtpd_client_connection_count_limit).
	DefaultMaxConnectionsPerSource = connlimit.PostfixMaxConnectionsPerClient
	// DefaultSessionTimeout bounds a whole SMTP session, however active: a client that
	// trickles its data slower than ReadTimeout cannot hold a connection for longer.
	DefaultSessionTimeout = 30 * time.Minute
)

// Config is the configuration of a Server. Start from DefaultConfig.
type Config struct {
	// Addr is the address to listen on, "ip:port"; port 0 picks a free one.
	Addr string
	// Hostname is the name the server greets with (220 <Hostname> ESMTP).
	Hostname string
	// Store makes accepted messages durable; required.
	Store Store
	// Policy says which recipients and sizes are accepted; required.
	Policy Policy
	// Logger receives one info line per accepted message and warnings; nil discards.
	// Callers pass a named one, e.g. logger.Named("smtpd").
	Logger hclog.Logger
	// ReadTimeout bounds the wait for each command and each read of the message data;
	// WriteTimeout the writing of each reply. Zero takes the default.
	ReadTimeout, WriteTimeout time.Duration
	// MaxRecipients is the number of recipients per message; zero takes the default.
	MaxRecipients int
	// MaxConnections caps the connections open at once, MaxConnectionsPerSource those
	// from one client IP address; past either a new connection is answered
	// "421 4.7.0 ... try again later" and closed. Zero takes the default.
	MaxConnections, MaxConnectionsPerSource int
	// SessionTimeout closes a session this long after its connection was accepted,
	// whatever it is doing (a transfer in flight fails and is not acknowledged). Zero
	// takes the default.
	SessionTimeout time.Duration
	// Observe, if set, is told the outcome of every message and every refused recipient
	// (for metrics). It is called from the connections' goroutines, concurrently.
	Observe func(Outcome)
	// LowStorage, if set, is asked at every MAIL FROM and before every DATA: while it
	// returns true the transaction is refused with 452 4.3.1 (see storage.go).
	LowStorage func() bool
}

// Outcome is what became of a message, or of a recipient, at the SMTP intake.
type Outcome string

// The outcomes Config.Observe is told. A refused recipient (RCPT) is one outcome; a
// message is one outcome at the end of its transfer (or at MAIL FROM when its declared
// size is over the limit). Commands the SMTP library itself refuses (bad syntax, out of
// sequence, too many recipients) are not outcomes.
const (
	Accepted        Outcome = "accepted"             // 250, the message is stored
	RefusedRelay    Outcome = "relay_denied"         // RCPT: not a relay domain
	RefusedNoRelay  Outcome = "no_relay_domains"     // RCPT: none configured (temporary)
	RefusedTooBig   Outcome = "too_big"              // over the size limit (declared or sent)
	RefusedLongLine Outcome = "line_too_long"        // a line over the SMTP limit
	FailedStore     Outcome = "store_failed"         // the store failed (temporary)
	FailedTransfer  Outcome = "transfer_failed"      // the client's transfer broke
	FailedShutdown  Outcome = "shutting_down"        // the server was closing
	RefusedStorage  Outcome = "insufficient_storage" // the node is low on disk (temporary)
)

// Outcomes lists every Outcome, for callers that set up one counter each.
var Outcomes = []Outcome{Accepted, RefusedRelay, RefusedNoRelay, RefusedTooBig,
	RefusedLongLine, FailedStore, FailedTransfer, FailedShutdown, RefusedStorage}

// DefaultConfig returns a Config with the default timeouts and limits; the caller sets
// Addr, Hostname, Store, Policy and Logger.
func DefaultConfig() Config {
	return Config{
		ReadTimeout:   DefaultReadTimeout,
		WriteTimeout:  DefaultWriteTimeout,
		MaxRecipients: DefaultMaxRecipients,

		MaxConnections:          DefaultMaxConnections,
		MaxConnectionsPerSource: DefaultMaxConnectionsPerSource,
		SessionTimeout:          DefaultSessionTimeout,
	}
}

// Errors of the Server. Configuration errors wrap ErrConfig.
var (
	// ErrConfig is wrapped by New's errors: the Config is not usable.
	ErrConfig = errors.New("smtpd: bad configuration")
	// ErrClosed is returned by Open on a Server that was closed.
	ErrClosed = errors.New("smtpd: server closed")
	// ErrOpen is returned by Open on a Server that is open already.
	ErrOpen = errors.New("smtpd: server already open")
)

// validate checks c and fills its zero fields with the defaults.
func (c *Config) validate() error {
	host, port, err := net.SplitHostPort(c.Addr)
	if err != nil {
		return fmt.Errorf("%w: address %q: %w", ErrConfig, c.Addr, err)
	}
	if _, err := netip.ParseAddr(host); err != nil {
		return fmt.Errorf("%w: address %q: the host must be an IP address", ErrConfig, c.Addr)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("%w: address %q: bad port %q", ErrConfig, c.Addr, port)
	}
	if strings.TrimSpace(c.Hostname) == "" || strings.ContainsAny(c.Hostname, " \t\r\n") {
		return fmt.Errorf("%w: hostname %q: it must be a name without spaces", ErrConfig, c.Hostname)
	}
	if c.Store == nil {
		return fmt.Errorf("%w: no Store", ErrConfig)
	}
	if c.Policy == nil {
		return fmt.Errorf("%w: no Policy", ErrConfig)
	}
	if c.ReadTimeout < 0 || c.WriteTimeout < 0 {
		return fmt.Errorf("%w: negative timeout", ErrConfig)
	}
	if c.MaxRecipients < 0 {
		return fmt.Errorf("%w: negative MaxRecipients", ErrConfig)
	}
	if c.MaxConnections < 0 || c.MaxConnectionsPerSource < 0 || c.SessionTimeout < 0 {
		return fmt.Errorf("%w: negative connection cap or session timeout", ErrConfig)
	}
	if c.MaxConnections == 0 {
		c.MaxConnections = DefaultMaxConnections
	}
	if c.MaxConnectionsPerSource == 0 {
		c.MaxConnectionsPerSource = min(DefaultMaxConnectionsPerSource, c.MaxConnections)
	}
	if c.MaxConnectionsPerSource > c.MaxConnections {
		return fmt.Errorf("%w: %d connections per client address is more than the %d in all",
			ErrConfig, c.MaxConnectionsPerSource, c.MaxConnections)
	}
	if c.SessionTimeout == 0 {
		c.SessionTimeout = DefaultSessionTimeout
	}
	if c.ReadTimeout == 0 {
		c.ReadTimeout = DefaultReadTimeout
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.MaxRecipients == 0 {
		c.MaxRecipients = DefaultMaxRecipients
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	return nil
}

// Server is the SMTP intake of a node. Its lifecycle is New, Open, Close.
type Server struct {
	cfg   Config
	log   hclog.Logger
	srv   *smtp.Server
	limit *connlimit.Limiter

	// closing is closed by Close: transfers in flight fail at their next read.
	closing chan struct{}
	// serveDone is closed when the accept loop has returned.
	serveDone chan struct{}
	// inflight counts the Store.Accept calls running; Close waits for them.
	inflight sync.WaitGroup

	// draining is set by Drain: no new transaction starts (see drain.go).
	draining atomic.Bool

	mu     sync.Mutex
	ln     net.Listener // nil until Open
	closed bool
	conns  map[*trackedConn]struct{}
	// activeTx counts the sessions inside a mail transaction (MAIL FROM to its end);
	// drained is made by Drain and closed once activeTx is 0 while draining.
	activeTx int
	drained  chan struct{}
}

// New checks cfg and returns a Server that is not listening yet. It does no I/O.
func New(cfg Config) (*Server, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Server{
		cfg:       cfg,
		log:       cfg.Logger,
		closing:   make(chan struct{}),
		serveDone: make(chan struct{}),
		conns:     make(map[*trackedConn]struct{}),
	}
	srv := smtp.NewServer(smtp.BackendFunc(s.newSession))
	srv.Domain = cfg.Hostname
	srv.ReadTimeout = cfg.ReadTimeout
	srv.WriteTimeout = cfg.WriteTimeout
	srv.MaxRecipients = cfg.MaxRecipients
	srv.MaxLineLength = 0 // trackedConn enforces maxLineLength (linelimit.go)
	// No MaxMessageBytes: the limit is the Policy's, checked per transaction (see doc.go).
	srv.ErrorLog = errorLog{s.log}
	s.srv = srv
	limit, err := connlimit.New(connlimit.Config{
		Name: "smtp", Max: cfg.MaxConnections, MaxPerSource: cfg.MaxConnectionsPerSource,
		MaxLifetime: cfg.SessionTimeout, Refuse: s.refuse, Logger: s.log,
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	s.limit = limit
	return s, nil
}

// Open starts listening on Config.Addr and serving connections in the background.
func (s *Server) Open() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if s.ln != nil {
		return ErrOpen
	}
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("smtpd: listen on %s: %w", s.cfg.Addr, err)
	}
	s.ln = &trackingListener{Listener: s.limit.Listen(ln), s: s}
	go func() {
		defer close(s.serveDone)
		if err := s.srv.Serve(s.ln); err != nil && !s.draining.Load() {
			s.log.Error("SMTP intake stopped accepting connections", "address", ln.Addr(), "error", err)
		}
	}()
	s.log.Info("SMTP intake listening", "address", ln.Addr(), "max-connections", s.cfg.MaxConnections,
		"max-connections-per-ip", s.cfg.MaxConnectionsPerSource, "idle-timeout", s.cfg.ReadTimeout,
		"session-timeout", s.cfg.SessionTimeout)
	return nil
}

// refuse answers a connection over a cap, as Postfix does, before it is closed.
func (s *Server) refuse(c net.Conn, reason error) {
	msg := "Too many connections, try again later"
	if errors.Is(reason, connlimit.ErrPerSource) {
		msg = "Too many connections from your address, try again later"
	}
	_, _ = fmt.Fprintf(c, "421 4.7.0 %s %s\r\n", s.cfg.Hostname, msg)
}

// Addr returns the address the server listens on, nil before Open.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Close stops listening, closes every connection and aborts the transfers in flight
// (their clients get no reply, so nothing half-stored is acknowledged), then waits until
// no Store.Accept call is running. A Store that reads its reader sees it fail at once. Close
// is idempotent; later calls return nil.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.closing)
	ln := s.ln
	conns := make([]*trackedConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()

	var err error
	if ln != nil {
		// Our connections first: go-smtp closes a connection under its lock, which a
		// command in progress holds (DATA while the store syncs), so its Close waits for
		// that command, whose reply would then still go out.
		for _, c := range conns {
			c.Close()
		}
		// go-smtp closes the listeners and connections it knows of. Ours are closed too:
		// it learns of the listener only once Serve has started, and of a connection only
		// once its goroutine has.
		if cerr := s.srv.Close(); cerr != nil && !errors.Is(cerr, net.ErrClosed) {
			err = fmt.Errorf("smtpd: close: %w", cerr)
		}
		if cerr := ln.Close(); cerr != nil && !errors.Is(cerr, net.ErrClosed) && err == nil {
			err = fmt.Errorf("smtpd: close: %w", cerr)
		}
		<-s.serveDone
	}
	s.inflight.Wait()
	s.limit.Close()
	return err
}

// beginAccept registers a Store.Accept call; it is refused once Close has begun.
func (s *Server) beginAccept() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.inflight.Add(1)
	return true
}

// trackingListener registers every accepted connection so that Close can close it.
type trackingListener struct {
	net.Listener
	s *Server
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, s: l.s, closed: make(chan struct{})}
	l.s.mu.Lock()
	closed := l.s.closed
	if !closed {
		l.s.conns[tc] = struct{}{}
	}
	l.s.mu.Unlock()
	if closed {
		c.Close()
	}
	return tc, nil
}

// trackedConn removes itself from the server's set when closed. While a message is
// transferred it renews its read deadline before every read, so that ReadTimeout bounds a
// stall of the client rather than the whole transfer (go-smtp sets the deadline once per
// command line, and reads the data of DATA under the deadline of the DATA line).
type trackedConn struct {
	net.Conn
	s    *Server
	once sync.Once
	// idle is the read timeout renewed before each read, in nanoseconds; 0: none.
	idle atomic.Int64
	// inTx is set while the session is inside a mail transaction (see drain.go).
	inTx atomic.Bool
	// waiting is set while go-smtp waits for a command outside a transaction: nothing
	// else writes to the connection then, so Drain may answer 421 on it.
	waiting atomic.Bool
	// bye makes the 421 of a drain go out once.
	bye sync.Once
	// closed is closed by Close.
	closed chan struct{}
	// lines bounds the length of the lines read.
	lines lineLimit
}

// Read reads for go-smtp, within maxLineLength: a read that ends a line too long returns
// no bytes and smtp.ErrTooLongLine, as go-smtp's own check did.
func (c *trackedConn) Read(p []byte) (int, error) {
	if c.lines.over {
		return 0, smtp.ErrTooLongLine
	}
	n, err := c.read(p)
	if n > 0 {
		if lerr := c.lines.check(p[:n]); lerr != nil {
			return 0, lerr
		}
	}
	return n, err
}

func (c *trackedConn) read(p []byte) (int, error) {
	if d := time.Duration(c.idle.Load()); d > 0 {
		c.Conn.SetReadDeadline(time.Now().Add(d))
	}
	if c.inTx.Load() {
		return c.Conn.Read(p)
	}
	// Between transactions: once the server drains, the next command gets 421.
	if c.s.draining.Load() {
		return 0, c.refuse()
	}
	c.waiting.Store(true)
	n, err := c.Conn.Read(p)
	c.waiting.Store(false)
	if n > 0 && c.s.draining.Load() {
		return 0, c.refuse()
	}
	return n, err
}

// renewDeadlines turns the renewal of the read deadline on (d > 0) or off (0).
func (c *trackedConn) renewDeadlines(d time.Duration) { c.idle.Store(int64(d)) }

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.s.mu.Lock()
		delete(c.s.conns, c)
		c.s.mu.Unlock()
		if c.closed != nil {
			close(c.closed)
		}
	})
	return c.Conn.Close()
}

// errorLog passes go-smtp's internal reports to hclog: panics as errors, accept failures
// as warnings, and per-connection failures (clients that reset, time out) at debug.
type errorLog struct{ l hclog.Logger }

func (e errorLog) Printf(format string, v ...any) { e.log(fmt.Sprintf(format, v...)) }

func (e errorLog) Println(v ...any) { e.log(strings.TrimSuffix(fmt.Sprintln(v...), "\n")) }

func (e errorLog) log(msg string) {
	switch {
	case strings.HasPrefix(msg, "panic"):
		e.l.Error("SMTP session panicked", "report", msg)
	case strings.HasPrefix(msg, "accept error"):
		e.l.Warn("SMTP accept failed", "report", msg)
	default:
		e.l.Debug("SMTP connection ended with an error", "report", msg)
	}
}
