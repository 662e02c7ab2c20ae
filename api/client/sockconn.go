package client

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"
)

// sockTransport is the http.RoundTripper of a Client. A request whose body is absent or
// small and replayable (what every call but a restore upload sends) is written and its
// answer read on the calling goroutine, over a kept-alive connection to the socket: one
// write and one read per exchange, where net/http's Transport hands each request to a
// writer goroutine and each answer back from a reader goroutine (issue 16: a third of the
// client's CPU per linearizable read was those hand-offs). The bytes on the wire are the
// same: the request is written by http.Request.Write and the answer parsed by
// http.ReadResponse. Any other request goes to fallback, a net/http Transport.
type sockTransport struct {
	dial     func(ctx context.Context) (net.Conn, error)
	fallback http.RoundTripper

	mu   sync.Mutex
	idle []*sockConn // kept-alive connections, the most recently used last
}

// maxIdleSockConns is how many idle connections a Client keeps to its socket.
const maxIdleSockConns = 2

// maxDirectBody is the largest request body sent on the calling goroutine: it fits in
// the socket's buffer, so writing it cannot block on a daemon that answers before it
// reads the body (a refusal), and the answer is then read.
const maxDirectBody = 64 << 10

// sockConn is one connection to the socket with its buffers.
type sockConn struct {
	c  net.Conn
	br *bufio.Reader // reads from lr
	lr limitReader   // bounds the answer's head while it is read
	bw *bufio.Writer // writes to cw
	cw countWriter
}

// maxAnswerHead bounds the status line and headers of an answer, as net/http's
// Transport bounds them (MaxResponseHeaderBytes).
const maxAnswerHead = 1 << 20

// errAnswerHead is what reading a head larger than maxAnswerHead gives.
var errAnswerHead = fmt.Errorf("the daemon's answer has more than %d bytes of headers", maxAnswerHead)

// limitReader reads from its connection while n, the bytes still allowed, is positive.
type limitReader struct {
	c net.Conn
	n int64
}

func (r *limitReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, errAnswerHead
	}
	if int64(len(p)) > r.n {
		p = p[:r.n]
	}
	n, err := r.c.Read(p)
	r.n -= int64(n)
	return n, err
}

// countWriter counts the bytes its connection took.
type countWriter struct {
	c net.Conn
	n int64
}

func (w *countWriter) Write(p []byte) (int, error) {
	n, err := w.c.Write(p)
	w.n += int64(n)
	return n, err
}

// aLongTimeAgo is a deadline in the past: setting it ends a blocked read or write.
var aLongTimeAgo = time.Unix(1, 0)

// direct says whether req is sent on the calling goroutine.
func direct(req *http.Request) bool {
	if req.Body == nil || req.Body == http.NoBody {
		return true
	}
	return req.GetBody != nil && req.ContentLength > 0 && req.ContentLength <= maxDirectBody
}

// RoundTrip sends req and returns the answer, whose body reads from the connection; the
// connection is kept for the next request once the body has been read to its end.
func (t *sockTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !direct(req) {
		return t.fallback.RoundTrip(req)
	}
	ctx := req.Context()
	for attempt := 0; ; attempt++ {
		r := req
		if attempt > 0 && req.GetBody != nil {
			// http.Request.Write closed the body of the first attempt: send a fresh copy.
			body, err := req.GetBody()
			if err != nil {
				return nil, err
			}
			r = new(http.Request)
			*r = *req
			r.Body = body
		}
		sc, reused, err := t.get(ctx)
		if err != nil {
			if r.Body != nil {
				_ = r.Body.Close()
			}
			return nil, err
		}
		resp, retry, err := t.exchange(ctx, sc, r)
		if err == nil {
			return resp, nil
		}
		// Only a kept-alive connection the daemon had closed (its idle timeout) is worth a
		// second try; each try takes one of the few idle connections or dials a new one.
		if !retry || !reused || attempt >= maxIdleSockConns {
			return nil, err
		}
	}
}

// get returns an idle connection (reused true) or a new one.
func (t *sockTransport) get(ctx context.Context) (sc *sockConn, reused bool, err error) {
	t.mu.Lock()
	if n := len(t.idle); n > 0 {
		sc = t.idle[n-1]
		t.idle[n-1] = nil
		t.idle = t.idle[:n-1]
	}
	t.mu.Unlock()
	if sc != nil {
		return sc, true, nil
	}
	c, err := t.dial(ctx)
	if err != nil {
		return nil, false, err
	}
	sc = &sockConn{c: c, lr: limitReader{c: c}, cw: countWriter{c: c}}
	sc.br = bufio.NewReader(&sc.lr)
	sc.bw = bufio.NewWriter(&sc.cw)
	return sc, false, nil
}

// put keeps sc for the next request, or closes it when enough are kept.
func (t *sockTransport) put(sc *sockConn) {
	if err := sc.c.SetDeadline(time.Time{}); err != nil {
		_ = sc.c.Close()
		return
	}
	t.mu.Lock()
	if len(t.idle) < maxIdleSockConns {
		t.idle = append(t.idle, sc)
		sc = nil
	}
	t.mu.Unlock()
	if sc != nil {
		_ = sc.c.Close()
	}
}

// exchange writes req on sc and reads the answer's head. retry says the request may be
// sent again on another connection: the daemon closed the connection before it took a
// byte of the request, or with no answer to a request that is safe to repeat. sc is
// closed on error.
func (t *sockTransport) exchange(ctx context.Context, sc *sockConn, req *http.Request) (resp *http.Response, retry bool, err error) {
	stop := func() bool { return true }
	if ctx.Done() != nil {
		// Ends a blocked write or read when ctx ends (its deadline or a cancel).
		stop = context.AfterFunc(ctx, func() { _ = sc.c.SetDeadline(aLongTimeAgo) })
	}
	fail := func(err error) error {
		stop()
		_ = sc.c.Close()
		if ctx.Err() != nil {
			return fmt.Errorf("%w (%v)", ctx.Err(), err)
		}
		return err
	}
	sc.cw.n = 0
	err = req.Write(sc.bw)
	if err == nil {
		err = sc.bw.Flush()
	}
	if err != nil {
		return nil, ctx.Err() == nil && (sc.cw.n == 0 || replayable(req)), fail(err)
	}
	sc.lr.n = maxAnswerHead
	if _, err = sc.br.Peek(1); err != nil {
		// Nothing of an answer arrived: the daemon closed the connection (an idle one as the
		// request arrived, or it stops). Only a request that changes nothing is sent again:
		// a change may have been made.
		closed := err == io.EOF || errors.Is(err, syscall.ECONNRESET)
		if err == io.EOF {
			err = io.ErrUnexpectedEOF // what http.ReadResponse says of an answer cut short
		}
		return nil, closed && ctx.Err() == nil && replayable(req), fail(err)
	}
	resp, err = http.ReadResponse(sc.br, req)
	if err != nil {
		return nil, false, fail(err)
	}
	sc.lr.n = math.MaxInt64 // the body's size is the caller's to bound
	keep := !resp.Close && !req.Close
	if resp.ContentLength == 0 && len(resp.TransferEncoding) == 0 {
		// No body (a HEAD, a 204, Content-Length: 0): the connection is free now.
		resp.Body = http.NoBody
		if !stop() || !keep {
			_ = sc.c.Close()
		} else {
			t.put(sc)
		}
		return resp, false, nil
	}
	resp.Body = &sockBody{rc: resp.Body, t: t, sc: sc, ctx: ctx, stop: stop, keep: keep}
	return resp, false, nil
}

// replayable says whether req may be sent twice: the methods that change nothing (as
// net/http's Transport decides).
func replayable(req *http.Request) bool {
	switch req.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return false
}

// sockBody is the body of an answer read on the connection it came on. Read to its end,
// it gives the connection back to the transport; closed before, it closes the connection.
// Close may be called while a Read blocks (to abandon a stream): it ends that Read.
type sockBody struct {
	rc   io.ReadCloser // the body as http.ReadResponse reads it from sc.br
	t    *sockTransport
	sc   *sockConn
	ctx  context.Context
	stop func() bool // stops the ctx watch; false if it fired
	keep bool        // the connection may serve another request

	mu   sync.Mutex
	done bool  // the connection is given back or closed
	err  error // what Read returns once done
}

// Read reads the body; at its end the connection is given back.
func (b *sockBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	done, err := b.done, b.err
	b.mu.Unlock()
	if done {
		return 0, err
	}
	n, err := b.rc.Read(p)
	if err == nil {
		return n, nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done { // closed meanwhile
		return n, b.err
	}
	b.done = true
	fired := !b.stop()
	switch {
	case err == io.EOF && b.keep && !fired:
		b.t.put(b.sc)
	case err == io.EOF:
		_ = b.sc.c.Close()
	default:
		_ = b.sc.c.Close()
		if b.ctx.Err() != nil {
			err = fmt.Errorf("%w (%v)", b.ctx.Err(), err)
		}
	}
	b.err = err
	return n, err
}

// Close ends the body; before its end it closes the connection.
func (b *sockBody) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.done {
		b.done = true
		b.err = http.ErrBodyReadAfterClose
		b.stop()
		_ = b.sc.c.Close()
	}
	return nil
}
