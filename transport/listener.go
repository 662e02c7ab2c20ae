package transport

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// listenerBacklog is how many routed connections a channel listener queues
// before routing blocks (for at most the handshake timeout).
const listenerBacklog = 64

// Conn is a connection accepted by the mux: the TLS connection after the
// channel byte, with the verified identity of the peer.
type Conn struct {
	net.Conn
	tls         *tls.Conn
	channel     Channel
	fingerprint string
	// m and peer let Partition cut the connection (nil m: a pinned dial, never cut).
	m    *Mux
	peer string
}

// PeerFingerprint returns the fingerprint of the client's CA-verified
// certificate, or "" if the client presented none (ChanJoin only).
func (c *Conn) PeerFingerprint() string { return c.fingerprint }

// Channel returns the channel the connection was routed to.
func (c *Conn) Channel() Channel { return c.channel }

// ConnectionState returns the TLS state of the connection.
func (c *Conn) ConnectionState() tls.ConnectionState { return c.tls.ConnectionState() }

// PeerFingerprint returns the fingerprint of the peer's leaf certificate for
// a connection handed out by a mux Listener or made by Dial/DialPinned, or ""
// if the peer presented none or conn is not a TLS connection. RPC handlers use
// it to authorize each request (http.Server.ConnContext can carry it).
func PeerFingerprint(conn net.Conn) string {
	switch c := conn.(type) {
	case interface{ PeerFingerprint() string }:
		return c.PeerFingerprint()
	case interface{ ConnectionState() tls.ConnectionState }:
		if pc := c.ConnectionState().PeerCertificates; len(pc) > 0 {
			return Fingerprint(pc[0].Raw)
		}
	case interface{ NetConn() net.Conn }:
		// A wrapper, such as a connection limiter's.
		return PeerFingerprint(c.NetConn())
	}
	return ""
}

type peerKey struct{}

// ConnContext is an http.Server ConnContext hook: it records the connection's
// PeerFingerprint in the request context, for PeerFingerprintFromContext.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, peerKey{}, PeerFingerprint(c))
}

// PeerFingerprintFromContext returns the fingerprint ConnContext recorded,
// or "" if there is none (no certificate, or ConnContext not installed).
func PeerFingerprintFromContext(ctx context.Context) string {
	fp, _ := ctx.Value(peerKey{}).(string)
	return fp
}

// chanListener is the net.Listener of one channel.
type chanListener struct {
	m    *Mux
	ch   Channel
	q    chan net.Conn
	done chan struct{}
	once sync.Once
}

func newChanListener(m *Mux, ch Channel) *chanListener {
	return &chanListener{m: m, ch: ch, q: make(chan net.Conn, listenerBacklog), done: make(chan struct{})}
}

// Accept waits for the next connection routed to the channel. The returned
// net.Conn is a *Conn.
func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case <-l.done:
		return nil, ErrClosed
	default:
	}
	select {
	case c := <-l.q:
		return c, nil
	case <-l.done:
		return nil, ErrClosed
	}
}

// Close stops the channel's listener only (not the mux); queued connections
// are closed and later ones for the channel are refused.
func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	l.drain()
	return nil
}

// Addr returns the mux's address.
func (l *chanListener) Addr() net.Addr { return muxAddr(l.m) }

// closed reports whether Close was called.
func (l *chanListener) closed() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

// deliver queues c for Accept, waiting at most until ctx ends.
func (l *chanListener) deliver(ctx context.Context, c net.Conn, log hclog.Logger) {
	select {
	case l.q <- c:
		// Close may have drained the queue just before our send.
		select {
		case <-l.done:
			l.drain()
		default:
		}
	case <-l.done:
		_ = c.Close()
		log.Debug("channel listener closed, connection dropped")
	case <-ctx.Done():
		_ = c.Close()
		log.Warn("channel backlog full, connection dropped")
	}
}

func (l *chanListener) drain() {
	for {
		select {
		case c := <-l.q:
			_ = c.Close()
		default:
			return
		}
	}
}

// badListener is returned by Listener for a channel the mux does not route.
type badListener struct {
	m  *Mux
	ch Channel
}

func (b badListener) Accept() (net.Conn, error) {
	return nil, fmt.Errorf("%w: %s", ErrUnknownChannel, b.ch)
}
func (b badListener) Close() error   { return nil }
func (b badListener) Addr() net.Addr { return muxAddr(b.m) }

// muxAddr returns the mux's listening address, or a placeholder before Open
// so that Addr never returns nil.
func muxAddr(m *Mux) net.Addr {
	if a := m.Addr(); a != nil {
		return a
	}
	return unboundAddr(m.cfg.BindAddr)
}

type unboundAddr string

func (a unboundAddr) Network() string { return "tcp" }
func (a unboundAddr) String() string  { return string(a) }

// RaftLayer returns a raft.StreamLayer over ChanRaft: Accept and Addr of the ChanRaft
// listener, and Dial over ChanRaft with this node's identity. Each call returns a new
// view whose Close detaches only that view (its Accept returns ErrClosed) and leaves the
// channel open, so that the daemon can stop one Raft instance and start another over
// the same port (a joining node replacing its own state). Make it after Open, so that
// Addr is the bound address that raft advertises.
func (m *Mux) RaftLayer() raft.StreamLayer {
	return &raftLayer{chanListener: m.listeners[ChanRaft], done: make(chan struct{})}
}

type raftLayer struct {
	*chanListener
	done chan struct{}
	once sync.Once
}

// Accept waits for the next Raft connection, until this view or the mux is closed.
func (r *raftLayer) Accept() (net.Conn, error) {
	select {
	case <-r.done:
		return nil, ErrClosed
	default:
	}
	select {
	case c := <-r.q:
		select {
		case <-r.done: // closed while a connection was taken: hand it back to nobody
			_ = c.Close()
			return nil, ErrClosed
		default:
		}
		return c, nil
	case <-r.chanListener.done:
		return nil, ErrClosed
	case <-r.done:
		return nil, ErrClosed
	}
}

// Close detaches this view; the ChanRaft listener stays open for the next one.
func (r *raftLayer) Close() error {
	r.once.Do(func() { close(r.done) })
	return nil
}

// Dial opens a ChanRaft connection to address within timeout.
func (r *raftLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx := context.Background()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	return r.m.Dial(ctx, string(address), ChanRaft)
}
