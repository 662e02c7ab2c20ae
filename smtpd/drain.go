package smtpd

import (
	"context"
	"errors"
	"io"
	"net"
	"time"
)

// DefaultDrainTimeout is how long a planned stop lets the transactions in flight finish
// (Drain's bound, as the daemon sets it by default). A sender that needs longer is cut
// off without a 250 and retries, at the other MX or later.
const DefaultDrainTimeout = 10 * time.Second

// byeReply is the line a draining server answers any command outside a transaction with,
// before it closes the connection (RFC 5321 3.8: 421 may be sent in reply to any command).
const byeReply = "421 4.3.2 service shutting down, please try again later\r\n"

// Drain stops the intake for a planned stop, in this order:
//
//  1. The listener closes at once, so that sending MTAs get "connection refused" and
//     fall back to the next MX without waiting.
//  2. The transactions in flight (from an accepted MAIL FROM to the reply after DATA) go
//     on, and each gets its 250 once its message is stored, until all have ended or ctx
//     is done. Any command outside a transaction (a new MAIL FROM, EHLO, NOOP) is
//     answered 421 4.3.2 and the connection is closed.
//  3. Once no transaction is left, every connection gets its 421 and the end of the
//     stream, and up to drainLinger to hang up. Then Close: what is still open is cut (a
//     transfer still running when ctx ended gets no reply: nothing half-stored is
//     acknowledged), and Drain returns once no Store.Accept call runs.
//
// Every 250 the server sent is for a message the Store returned from, so the caller
// may close the Store when Drain returns. Drain on a closed server returns nil.
func (s *Server) Drain(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	if s.drained == nil {
		s.draining.Store(true)
		s.drained = make(chan struct{})
		if s.activeTx == 0 {
			close(s.drained)
		}
	}
	ln, drained, active := s.ln, s.drained, s.activeTx
	s.mu.Unlock()

	if ln != nil {
		if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			s.log.Warn("SMTP intake: closing the listener", "error", err)
		}
		s.log.Info("SMTP intake draining: no longer accepting connections",
			"transactions-in-flight", active)
	}
	select {
	case <-drained:
	case <-ctx.Done():
		s.mu.Lock()
		left := s.activeTx
		s.mu.Unlock()
		s.log.Warn("SMTP drain bound reached: cutting the transactions still in flight (no 250 was sent for them; their senders retry)",
			"transactions", left)
	}
	s.mu.Lock()
	conns := make([]*trackedConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	if ctx.Err() == nil {
		// Every session is between transactions: each gets its 421 (now if it waits for a
		// command, else at its next read) and the end of the stream, and a moment to read
		// them and hang up. Closing a connection whose client's next command is still
		// unread would reset it, and the 421 with it.
		for _, c := range conns {
			if c.waiting.Load() && !c.inTx.Load() {
				c.sayBye()
				c.closeWrite()
			}
		}
		linger := time.NewTimer(drainLinger)
		defer linger.Stop()
	wait:
		for _, c := range conns {
			select {
			case <-c.closed:
			case <-linger.C:
				break wait
			case <-ctx.Done():
				break wait
			}
		}
	}
	return s.Close()
}

// drainLinger bounds how long a drained server waits for its clients to hang up after
// their 421.
const drainLinger = 2 * time.Second

// beginTx counts the session as inside a transaction; it is refused while draining.
func (ss *session) beginTx() bool {
	s := ss.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining.Load() || s.closed {
		return false
	}
	if !ss.inTx {
		ss.inTx = true
		s.activeTx++
		if ss.conn != nil {
			ss.conn.inTx.Store(true)
		}
	}
	return true
}

// endTx ends the session's transaction, if it is in one; the last one to end during a
// drain lets Drain go on.
func (ss *session) endTx() {
	s := ss.s
	s.mu.Lock() // also guards ss.inTx: go-smtp's Close calls Logout from another goroutine
	defer s.mu.Unlock()
	if !ss.inTx {
		return
	}
	ss.inTx = false
	if ss.conn != nil {
		ss.conn.inTx.Store(false)
	}
	s.activeTx--
	if s.activeTx == 0 && s.drained != nil {
		select {
		case <-s.drained:
		default:
			close(s.drained)
		}
	}
}

// refuse answers a command that came while draining with 421 and closes the connection:
// after the 421 the end of the stream, then what the client still sends is read and
// dropped (for at most drainLinger and 64 KiB) until it hangs up, so that the close does
// not reset the connection before the client has read the 421. The error it returns makes
// go-smtp end the connection quietly.
func (c *trackedConn) refuse() error {
	c.sayBye()
	c.closeWrite()
	c.Conn.SetReadDeadline(time.Now().Add(drainLinger))
	_, _ = io.Copy(io.Discard, io.LimitReader(c.Conn, 64<<10))
	c.Close()
	return net.ErrClosed
}

// closeWrite ends the stream to the client (TCP FIN), keeping the reading side open. A
// wrapping connection (a connection limiter's) is looked through with NetConn.
func (c *trackedConn) closeWrite() {
	conn := c.Conn
	for range 8 {
		if cw, ok := conn.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
			return
		}
		u, ok := conn.(interface{ NetConn() net.Conn })
		if !ok {
			return
		}
		conn = u.NetConn()
	}
}

// sayBye writes the 421 of a drain, once. It is called only while go-smtp writes
// nothing on the connection (it waits for a command, or has just read one it will not
// get to handle).
func (c *trackedConn) sayBye() {
	c.bye.Do(func() {
		c.Conn.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = c.Conn.Write([]byte(byeReply))
	})
}
