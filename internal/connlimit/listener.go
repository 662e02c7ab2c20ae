package connlimit

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Listen wraps ln: every connection its Accept returns holds a slot of l until it is
// closed, and is closed by the limiter once idle for Config.IdleTimeout or open for
// Config.MaxLifetime. A connection over a cap is given to Config.Refuse and closed
// (lingering, see closeRefused); Accept then waits for the next one. Closing the
// returned listener closes ln (not l).
func (l *Limiter) Listen(ln net.Listener) net.Listener {
	return &listener{Listener: ln, l: l}
}

type listener struct {
	net.Listener
	l *Limiter
}

func (ln *listener) Accept() (net.Conn, error) {
	for {
		c, err := ln.Listener.Accept()
		if err != nil {
			return nil, err
		}
		release, err := ln.l.Acquire(c.RemoteAddr())
		if err != nil {
			if f := ln.l.cfg.Refuse; f != nil {
				_ = c.SetWriteDeadline(time.Now().Add(RefuseTimeout))
				f(c, err)
				ln.l.closeRefused(c)
				continue
			}
			_ = c.Close()
			continue
		}
		return ln.l.wrap(c, release), nil
	}
}

// The lingering close of a refused connection.
const (
	// LingerTimeout bounds how long a refused connection is read (and what it sent
	// discarded) before it is closed.
	LingerTimeout = time.Second
	// lingerMaxBytes bounds what is read from a refused connection.
	lingerMaxBytes = 64 << 10
	// maxLingering bounds the refused connections lingering at once per listener.
	maxLingering = 16
)

// closeRefused closes c, which Config.Refuse has answered. A client such as an HTTP
// client writes its request while the answer is on its way; closed at once, c would
// make that write fail (EPIPE on a unix socket, a reset on TCP that can discard the
// answer from the client's buffer), and the client would see a broken pipe instead of
// the reason. So c's write side is shut, what the client sends is read and discarded
// until it closes, for up to LingerTimeout and lingerMaxBytes, and c is closed then, in
// a goroutine of its own. At most a few connections linger at once (a flood must not
// hold descriptors); past that, or once the Limiter is closed, c is closed at once, and
// Close ends those lingering.
func (l *Limiter) closeRefused(c net.Conn) {
	l.lmu.Lock()
	atOnce := l.closed
	if !atOnce {
		select {
		case l.lingering <- struct{}{}:
			l.lingerers[c] = struct{}{}
		default:
			atOnce = true // every slot taken
		}
	}
	l.lmu.Unlock()
	if atOnce {
		_ = c.Close()
		return
	}
	go func() {
		defer func() { <-l.lingering }()
		defer func() {
			l.lmu.Lock()
			delete(l.lingerers, c)
			l.lmu.Unlock()
			_ = c.Close()
		}()
		if cw, ok := c.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
		_ = c.SetReadDeadline(time.Now().Add(LingerTimeout))
		_, _ = io.CopyN(io.Discard, c, lingerMaxBytes)
	}()
}

// wrap returns c holding the slot that release gives back, with its timers started.
func (l *Limiter) wrap(c net.Conn, release func()) *Conn {
	lc := &Conn{Conn: c, release: release}
	lc.last.Store(time.Now().UnixNano())
	// The timers are made under mu: a timer that fires at once finds them set.
	lc.mu.Lock()
	defer lc.mu.Unlock()
	if d := l.cfg.MaxLifetime; d > 0 {
		lc.life = time.AfterFunc(d, func() {
			l.cfg.Logger.Debug("closing a connection at the end of its lifetime",
				"listener", l.cfg.Name, "remote-addr", c.RemoteAddr().String(), "lifetime", d)
			_ = lc.Close()
		})
	}
	if d := l.cfg.IdleTimeout; d > 0 {
		lc.idle = time.AfterFunc(d, func() { lc.checkIdle(l, d) })
	}
	return lc
}

// Conn is a connection accepted through Limiter.Listen. It holds its slot until Close.
type Conn struct {
	net.Conn
	release func()
	// last is the time of the last read or write that moved bytes, in Unix nanoseconds.
	last atomic.Int64

	mu         sync.Mutex
	idle, life *time.Timer // nil when not set
	closed     bool
}

// NetConn returns the wrapped connection (like tls.Conn.NetConn), so that callers can
// reach its own methods (a peer's certificate, say).
func (c *Conn) NetConn() net.Conn { return c.Conn }

// Read reads from the connection; bytes read count as activity.
func (c *Conn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.last.Store(time.Now().UnixNano())
	}
	return n, err
}

// Write writes to the connection; bytes written count as activity.
func (c *Conn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if n > 0 {
		c.last.Store(time.Now().UnixNano())
	}
	return n, err
}

// Close closes the connection, stops its timers and gives its slot back. It may be
// called more than once, from any goroutine.
func (c *Conn) Close() error {
	c.mu.Lock()
	first := !c.closed
	c.closed = true
	for _, t := range []*time.Timer{c.idle, c.life} {
		if t != nil {
			t.Stop()
		}
	}
	c.mu.Unlock()
	err := c.Conn.Close()
	if first {
		c.release()
	}
	return err
}

// checkIdle runs when the idle timer fires: it closes the connection if nothing moved
// for d, or sets the timer for when that would be.
func (c *Conn) checkIdle(l *Limiter, d time.Duration) {
	quiet := time.Since(time.Unix(0, c.last.Load()))
	if quiet < d {
		c.mu.Lock()
		if !c.closed {
			c.idle.Reset(d - quiet)
		}
		c.mu.Unlock()
		return
	}
	l.cfg.Logger.Debug("closing an idle connection", "listener", l.cfg.Name,
		"remote-addr", c.RemoteAddr().String(), "idle", quiet.Round(time.Millisecond))
	_ = c.Close()
}
