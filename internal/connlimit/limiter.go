package connlimit

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Errors of Acquire: why a connection was refused.
var (
	// ErrTotal: the listener holds Config.Max connections already.
	ErrTotal = errors.New("connlimit: too many connections")
	// ErrPerSource: the source address holds Config.MaxPerSource connections already.
	ErrPerSource = errors.New("connlimit: too many connections from this address")
	// ErrConfig is wrapped by New's errors.
	ErrConfig = errors.New("connlimit: bad configuration")
)

// DefaultLogInterval is how often refusals are summed up in the log.
const DefaultLogInterval = 10 * time.Second

// Config configures a Limiter. Fields are read once, by New.
type Config struct {
	// Name names the listener in the logs ("smtp", "join", "handshake", ...).
	Name string
	// Max is the number of connections open at once; it must be at least 1.
	Max int
	// MaxPerSource is the number of connections open at once from one source IP address;
	// zero or more than Max means Max. Connections whose remote address is no IP address
	// (unix sockets) share one source.
	MaxPerSource int
	// IdleTimeout closes a connection of Listen that has read and written nothing for
	// this long; zero: never.
	IdleTimeout time.Duration
	// MaxLifetime closes a connection of Listen this long after it was accepted, whatever
	// it is doing; zero: never.
	MaxLifetime time.Duration
	// Refuse, if set, is given each connection that Listen refuses, with the reason
	// (ErrTotal or ErrPerSource), before it is closed. It runs in the accept loop: it must
	// not block (it has a write deadline of RefuseTimeout set). The connection is then
	// closed lingering: what the client sends is read for up to LingerTimeout, so that
	// the answer reaches a client that writes before it reads (HTTP).
	Refuse func(c net.Conn, reason error)
	// Logger receives the refusal summaries (warn) and the timeouts (debug); nil discards.
	Logger hclog.Logger
	// LogInterval is how often refusals are summed up; zero means DefaultLogInterval.
	LogInterval time.Duration
}

// RefuseTimeout bounds Config.Refuse's writing to a refused connection.
const RefuseTimeout = 200 * time.Millisecond

// Limiter counts the connections of one listener, in total and per source address. It
// is safe for concurrent use.
type Limiter struct {
	cfg Config
	log *refusalLog
	// lingering holds a token per refused connection being closed (closeRefused).
	lingering chan struct{}

	lmu sync.Mutex
	// lingerers are the refused connections being closed, which Close closes at once.
	lingerers map[net.Conn]struct{}
	closed    bool // Close was called: refused connections are closed at once

	mu    sync.Mutex
	total int
	per   map[netip.Addr]int
}

// New checks cfg and returns a Limiter. It does no I/O.
func New(cfg Config) (*Limiter, error) {
	if cfg.Max < 1 {
		return nil, fmt.Errorf("%w: %s: cap %d, want at least 1", ErrConfig, cfg.Name, cfg.Max)
	}
	if cfg.MaxPerSource < 0 || cfg.IdleTimeout < 0 || cfg.MaxLifetime < 0 || cfg.LogInterval < 0 {
		return nil, fmt.Errorf("%w: %s: negative setting", ErrConfig, cfg.Name)
	}
	if cfg.MaxPerSource == 0 || cfg.MaxPerSource > cfg.Max {
		cfg.MaxPerSource = cfg.Max
	}
	if cfg.LogInterval == 0 {
		cfg.LogInterval = DefaultLogInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	return &Limiter{
		cfg:       cfg,
		per:       make(map[netip.Addr]int),
		lingering: make(chan struct{}, min(max(cfg.Max/4, 1), maxLingering)),
		lingerers: make(map[net.Conn]struct{}),
		log:       newRefusalLog(cfg.Logger, cfg.Name, cfg.Max, cfg.MaxPerSource, cfg.LogInterval),
	}, nil
}

// Max returns the global cap; MaxPerSource the cap per source address.
func (l *Limiter) Max() int { return l.cfg.Max }

// MaxPerSource returns the cap per source address.
func (l *Limiter) MaxPerSource() int { return l.cfg.MaxPerSource }

// Open returns the number of slots held now.
func (l *Limiter) Open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

// Acquire takes a slot for a connection from remote. It returns the function that gives
// the slot back (call it once; later calls do nothing), or an error wrapping ErrTotal or
// ErrPerSource, which is also counted for the refusal log.
func (l *Limiter) Acquire(remote net.Addr) (release func(), err error) {
	src := Source(remote)
	l.mu.Lock()
	switch {
	case l.per[src] >= l.cfg.MaxPerSource:
		err = ErrPerSource
	case l.total >= l.cfg.Max:
		err = ErrTotal
	default:
		l.total++
		l.per[src]++
	}
	l.mu.Unlock()
	if err != nil {
		l.log.add(src, err)
		return nil, err
	}
	var once sync.Once
	return func() { once.Do(func() { l.release(src) }) }, nil
}

func (l *Limiter) release(src netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if n := l.per[src] - 1; n > 0 {
		l.per[src] = n
	} else {
		delete(l.per, src)
	}
}

// Close writes the summary of the refusals not yet logged, stops the log's timer and
// closes the refused connections still lingering (closeRefused); a connection refused
// after Close is closed at once. The Limiter keeps counting; Close is idempotent.
func (l *Limiter) Close() {
	l.log.close()
	l.lmu.Lock()
	l.closed = true
	conns := make([]net.Conn, 0, len(l.lingerers))
	for c := range l.lingerers {
		conns = append(conns, c)
	}
	l.lmu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
}

// Source returns the source address a connection from remote is counted under: its IP
// address (IPv4-mapped IPv6 addresses as IPv4), or the zero Addr when remote is no IP
// address.
func Source(remote net.Addr) netip.Addr {
	if remote == nil {
		return netip.Addr{}
	}
	if ta, ok := remote.(*net.TCPAddr); ok {
		a, _ := netip.AddrFromSlice(ta.IP)
		return a.Unmap()
	}
	ap, err := netip.ParseAddrPort(remote.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}
