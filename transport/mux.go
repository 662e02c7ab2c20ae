package transport

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pmgcm/pmgcm/internal/connlimit"
)

// Channel is the first byte a dialer sends after the TLS handshake; it picks
// the service the connection is routed to.
type Channel byte

// The channels of the mux. ChanAny is never sent on the wire: it is what
// PeerAuthorizer receives at the TLS handshake, before the channel is known.
const (
	ChanAny  Channel = 0
	ChanRaft Channel = 'R'
	ChanRPC  Channel = 'C'
	ChanJoin Channel = 'J'
	ChanMail Channel = 'M'
)

// channels lists the channels a connection may be routed to.
var channels = []Channel{ChanRaft, ChanRPC, ChanJoin, ChanMail}

// String returns the channel's name, for logs.
func (c Channel) String() string {
	switch c {
	case ChanAny:
		return "any"
	case ChanRaft:
		return "raft"
	case ChanRPC:
		return "rpc"
	case ChanJoin:
		return "join"
	case ChanMail:
		return "mail"
	}
	return fmt.Sprintf("0x%02x", byte(c))
}

func (c Channel) valid() bool {
	switch c {
	case ChanRaft, ChanRPC, ChanJoin, ChanMail:
		return true
	}
	return false
}

// PeerAuthorizer decides whether a peer that presented a CA-verified
// certificate may open ch. It is called with the leaf certificate's
// fingerprint; returning an error refuses the connection (the error text is
// logged; wrap ErrPeerRefused).
//
// On the server side it is called twice per connection: with ChanAny during
// the TLS handshake (so non-members fail the handshake itself) and with the
// requested channel once the channel byte is read. On the dialing side (Dial)
// it is called once with the channel being opened, for the server's
// certificate. It must be safe for concurrent use and must not block: it runs inside
// the TLS handshake. A refusal whose error wraps a *Refusal (with errors.As) is sent
// to the dialer (see Refusal); any other is a silent close.
type PeerAuthorizer func(ch Channel, fingerprint string) error

// Config configures a Mux. Fields are read once, by New.
type Config struct {
	// BindAddr is the "ip:port" to listen on. Its IP, unless unspecified, is also
	// the source address of every connection Dial makes.
	BindAddr string
	// Logger receives the mux's logs; nil discards them.
	Logger hclog.Logger
	// HandshakeTimeout bounds the TLS handshake plus the channel byte and
	// its acknowledgement, on both the accepting and the dialing side.
	// Zero means 5s.
	HandshakeTimeout time.Duration
	// RTOMin is the minimum TCP retransmission timeout of every connection the mux
	// dials or accepts (see DefaultRTOMin); zero means DefaultRTOMin, negative the
	// kernel's default.
	RTOMin time.Duration
	// Authorize checks CA-verified peers; nil allows any CA-verified peer.
	Authorize PeerAuthorizer
	// MaxPending caps the connections between Accept and routing (TLS handshake and
	// channel byte) at once, MaxPendingPerSource those from one source IP address; past
	// either a new connection is closed at once (and counted in a summary line of the
	// log), so that idle clients, from one address or many, can neither exhaust the
	// descriptors nor keep members out. Zero takes DefaultMaxPending and
	// DefaultMaxPendingPerSource (at most MaxPending).
	MaxPending, MaxPendingPerSource int
	// Refused, if set, is told of every refusal of this node's Dial by the server
	// after the handshake: explained (a *Refusal with the server's epoch) or not (the
	// zero Refusal). It must not block.
	Refused func(addr string, r Refusal)
}

// Defaults of Config.MaxPending and Config.MaxPendingPerSource. A member's connections
// pass the handshake in milliseconds, a few at a time.
const (
	DefaultMaxPending          = 1024
	DefaultMaxPendingPerSource = 64
)

// DefaultConfig returns a Config with defaults filled in, for bindAddr.
func DefaultConfig(bindAddr string) Config {
	return Config{BindAddr: bindAddr, HandshakeTimeout: 5 * time.Second,
		MaxPending: DefaultMaxPending, MaxPendingPerSource: DefaultMaxPendingPerSource}
}

// validate fills defaults and checks the config.
func (c *Config) validate() error {
	if _, _, err := net.SplitHostPort(c.BindAddr); err != nil {
		return fmt.Errorf("transport: bind address %q: %w", c.BindAddr, err)
	}
	if c.HandshakeTimeout < 0 {
		return fmt.Errorf("transport: negative handshake timeout %v", c.HandshakeTimeout)
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = 5 * time.Second
	}
	if c.RTOMin == 0 {
		c.RTOMin = DefaultRTOMin
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	if c.MaxPending < 0 || c.MaxPendingPerSource < 0 {
		return fmt.Errorf("transport: negative cap on pending handshakes")
	}
	if c.MaxPending == 0 {
		c.MaxPending = DefaultMaxPending
	}
	if c.MaxPendingPerSource == 0 {
		c.MaxPendingPerSource = DefaultMaxPendingPerSource
	}
	c.MaxPendingPerSource = min(c.MaxPendingPerSource, c.MaxPending)
	return nil
}

// Mux accepts TLS connections on one port and routes each to a channel
// listener; it also dials peers with the node's identity. All methods are
// safe for concurrent use.
type Mux struct {
	cfg    Config
	logger hclog.Logger
	// localIP is BindAddr's IP, the source address of every Dial (nil: unspecified).
	localIP net.IP
	id      atomic.Pointer[Identity]
	// partition is the set of hosts cut off by Partition (fault injection).
	partition atomic.Pointer[partition]

	listeners map[Channel]*chanListener // fixed at New

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // accept loop and handshake goroutines
	// pending counts the connections between Accept and routing, in all and per source.
	pending *connlimit.Limiter

	mu        sync.Mutex
	ln        net.Listener
	closed    bool
	closeErr  error
	closeOnce sync.Once
}

// New makes a Mux for cfg presenting id. It does no I/O; call Open to listen.
func New(cfg Config, id *Identity) (*Mux, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if id == nil {
		return nil, errors.New("transport: nil identity")
	}
	pending, err := connlimit.New(connlimit.Config{Name: "cluster-handshake",
		Max: cfg.MaxPending, MaxPerSource: cfg.MaxPendingPerSource, Logger: cfg.Logger})
	if err != nil {
		return nil, fmt.Errorf("transport: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Mux{
		cfg:       cfg,
		logger:    cfg.Logger,
		listeners: make(map[Channel]*chanListener, len(channels)),
		ctx:       ctx,
		cancel:    cancel,
		pending:   pending,
	}
	if host, _, err := net.SplitHostPort(cfg.BindAddr); err == nil {
		m.localIP = net.ParseIP(host)
	}
	m.id.Store(id)
	for _, ch := range channels {
		m.listeners[ch] = newChanListener(m, ch)
	}
	return m, nil
}

// Open listens on the bind address and starts accepting connections in the
// background.
func (m *Mux) Open() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	if m.ln != nil {
		return fmt.Errorf("transport: already listening on %s", m.ln.Addr())
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(m.ctx, "tcp", m.cfg.BindAddr)
	if err != nil {
		return fmt.Errorf("transport: listen on %s: %w", m.cfg.BindAddr, err)
	}
	m.ln = ln
	m.logger.Info("listening", "address", ln.Addr().String(), "max-pending-handshakes", m.cfg.MaxPending,
		"max-pending-handshakes-per-ip", m.cfg.MaxPendingPerSource, "handshake-timeout", m.cfg.HandshakeTimeout)
	m.wg.Add(1)
	go m.acceptLoop(ln)
	return nil
}

// Addr returns the address the mux listens on, or nil before Open.
func (m *Mux) Addr() net.Addr {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ln == nil {
		return nil
	}
	return m.ln.Addr()
}

// SetIdentity atomically replaces the node's identity. New handshakes, on the
// server and on the dialing side, use it; established connections keep the
// one they were made with. It is how certificates rotate and how a node
// enters a cluster (create, join) without a restart.
func (m *Mux) SetIdentity(id *Identity) {
	if id == nil {
		panic("transport: SetIdentity(nil)")
	}
	old := m.id.Swap(id)
	m.logger.Info("identity changed", "old-fingerprint", old.Fingerprint,
		"fingerprint", id.Fingerprint, "standalone", id.Standalone())
}

// Identity returns the node's current identity.
func (m *Mux) Identity() *Identity { return m.id.Load() }

// Listener returns the listener of connections routed to ch. Its Accept
// blocks until a connection arrives or the listener or mux is closed. For a
// channel the mux does not know, Accept fails with ErrUnknownChannel.
func (m *Mux) Listener(ch Channel) net.Listener {
	if l, ok := m.listeners[ch]; ok {
		return l
	}
	return badListener{m: m, ch: ch}
}

// Close stops listening, closes every channel listener (their Accept returns
// an error wrapping net.ErrClosed), closes connections not yet accepted, and
// waits for in-flight handshakes to end. Connections already handed out are
// the caller's to close. Close is idempotent.
func (m *Mux) Close() error {
	m.closeOnce.Do(func() {
		m.mu.Lock()
		m.closed = true
		ln := m.ln
		m.mu.Unlock()
		m.cancel()
		if ln != nil {
			if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
				m.closeErr = err
			}
		}
		m.wg.Wait()
		for _, l := range m.listeners {
			_ = l.Close()
		}
		m.pending.Close()
		m.logger.Info("closed")
	})
	return m.closeErr
}

func (m *Mux) acceptLoop(ln net.Listener) {
	defer m.wg.Done()
	var backoff time.Duration
	for {
		raw, err := ln.Accept()
		if err != nil {
			if m.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// Transient (e.g. EMFILE): back off like net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			m.logger.Warn("accept failed", "error", err, "retry-in", backoff)
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-m.ctx.Done():
				t.Stop()
				return
			}
			continue
		}
		backoff = 0
		release, err := m.pending.Acquire(raw.RemoteAddr())
		if err != nil {
			// Counted and summed up in the log by the limiter: no line per refusal.
			_ = raw.Close()
			continue
		}
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			defer release()
			m.handle(raw)
		}()
	}
}

// handle runs the TLS handshake, reads the channel byte, authorizes, answers
// with the acknowledgement and routes the connection. Everything before
// routing is bounded by HandshakeTimeout and by Close.
func (m *Mux) handle(raw net.Conn) {
	tuneConn(raw, m.cfg.RTOMin)
	remote := raw.RemoteAddr().String()
	log := m.logger.With("remote-addr", remote)
	if m.partitioned(remote) {
		_ = raw.Close()
		return
	}

	ctx, cancel := context.WithTimeout(m.ctx, m.cfg.HandshakeTimeout)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { _ = raw.Close() })

	tc := tls.Server(raw, m.serverConfig())
	if err := tc.HandshakeContext(ctx); err != nil {
		stop()
		_ = raw.Close()
		if errors.Is(err, ErrPeerRefused) {
			log.Warn("peer refused at handshake", "error", err)
		} else {
			log.Debug("TLS handshake failed", "error", err)
		}
		return
	}
	var fp string
	if pc := tc.ConnectionState().PeerCertificates; len(pc) > 0 {
		fp = Fingerprint(pc[0].Raw)
	}

	var b [1]byte
	if _, err := tc.Read(b[:]); err != nil {
		stop()
		_ = raw.Close()
		log.Debug("no channel byte", "error", err)
		return
	}
	ch := Channel(b[0])
	log = log.With("channel", ch.String())
	if err := m.admit(ch, fp); err != nil {
		if r := refusalOf(err); r != nil && fp != "" {
			// A member refused for a reason it must know (it is fenced): say so, with
			// the epoch, within the handshake deadline.
			_ = writeRefusal(tc, r)
		}
		stop()
		_ = raw.Close()
		if errors.Is(err, ErrUnknownChannel) || fp == "" {
			// Not a cluster member speaking: a scanner or a confused client.
			log.Debug("connection refused", "error", err)
		} else {
			log.Warn("connection refused", "fingerprint", fp, "error", err)
		}
		return
	}
	if _, err := tc.Write(b[:]); err != nil {
		stop()
		_ = raw.Close()
		log.Debug("acknowledging channel failed", "error", err)
		return
	}
	if !stop() {
		// The deadline or Close fired and closed the connection.
		log.Debug("connection timed out before routing")
		return
	}
	log.Trace("connection accepted", "fingerprint", fp)
	m.listeners[ch].deliver(ctx, &Conn{Conn: tc, tls: tc, channel: ch, fingerprint: fp, m: m, peer: remote}, log)
}

// admit decides, once the channel is known, whether a peer with fingerprint
// fp ("" for no certificate) may use ch.
func (m *Mux) admit(ch Channel, fp string) error {
	if !ch.valid() {
		return fmt.Errorf("%w: byte %s", ErrUnknownChannel, ch)
	}
	if fp == "" {
		if ch != ChanJoin {
			return fmt.Errorf("%w: channel %s needs a cluster certificate", ErrPeerRefused, ch)
		}
		return nil
	}
	return m.authorize(ch, fp)
}

func (m *Mux) authorize(ch Channel, fp string) error {
	if m.cfg.Authorize == nil {
		return nil
	}
	if err := m.cfg.Authorize(ch, fp); err != nil {
		if errors.Is(err, ErrPeerRefused) {
			return err
		}
		return fmt.Errorf("%w: %w", ErrPeerRefused, err)
	}
	return nil
}

// serverConfig returns the TLS config for one inbound handshake, bound to the
// identity current at that moment.
func (m *Mux) serverConfig() *tls.Config {
	id := m.id.Load()
	return &tls.Config{
		MinVersion:             tls.VersionTLS13,
		Certificates:           []tls.Certificate{id.Cert},
		ClientAuth:             tls.RequestClientCert,
		SessionTicketsDisabled: true, // every connection is verified afresh
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return nil // certificate-less: ChanJoin only, checked later
			}
			fp, err := id.verifyPeer(cs.PeerCertificates, x509.ExtKeyUsageClientAuth)
			if err != nil {
				return err
			}
			return m.authorize(ChanAny, fp)
		},
	}
}
