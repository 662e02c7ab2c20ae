// Package synchttp is an http.RoundTripper for HTTP/1.1 over kept-alive connections that
// writes each request and reads its answer on the calling goroutine: one write and one
// read per exchange, where net/http's Transport hands each request to a writer goroutine
// and each answer back from a reader goroutine (issue 16: a third of the control-socket
// client's CPU per linearizable read was those hand-offs). The request is written by
// http.Request.Write and the answer parsed by http.ReadResponse: the bytes on the wire
// are net/http's, except that no "Accept-Encoding: gzip" is added (set
// DisableCompression on the Fallback for the same bytes either way).
//
// It owns the connections it dials and nothing else; it imports nothing of this project,
// so that api/client (a client of the control socket only) may use it as well as the
// daemon.
package synchttp

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"sync"
	"syscall"
	"time"
)

// Transport sends a request whose body is absent or small and replayable (at most
// MaxDirectBody, with GetBody), and that Only accepts, on the calling goroutine; any
// other request goes to Fallback. A call is bounded by its request's ctx alone. The
// fields are set before the first request and not changed after.
//
// Unlike net/http's Transport, no goroutine watches an idle connection, so one the server
// closed is found out only by the next request on it. Mostly its write fails with
// nothing taken and the request goes again on a new connection, whatever its method; but
// when the server closes just as the request arrives (on a unix socket too), or over TCP
// where the write succeeds and the read finds the close, a replayable request (GET,
// HEAD) goes again and any other fails as "no answer" (outcome unknown to the caller).
// So keep IdleTimeout below the server's idle timeout, and over TCP let Only pick
// replayable requests.
type Transport struct {
	// Dial connects to addr (the request URL's host).
	Dial func(ctx context.Context, addr string) (net.Conn, error)
	// Fallback takes the requests not sent directly; nil refuses them.
	Fallback http.RoundTripper
	// MaxIdlePerHost is how many idle connections are kept per host (0: 2).
	MaxIdlePerHost int
	// IdleTimeout closes a connection idle for longer (0: 90 s, as the mux's Transport),
	// so that those to a host no longer asked do not stay open.
	IdleTimeout time.Duration
	// Only, when set, picks the requests sent directly among those that could be.
	Only func(req *http.Request) bool

	mu   sync.Mutex
	idle map[string][]*sockConn // kept-alive connections by host, the most recently used last
	// gen counts the calls of CloseIdleConnections: a connection dialed before the last
	// one is closed when its request ends instead of being kept.
	gen uint64
}

// ErrNoFallback is returned for a request that is not sent directly when Fallback is nil.
var ErrNoFallback = errors.New("synchttp: request not sent directly, and no fallback transport")

// idleTimeout returns how long a connection stays idle.
func (t *Transport) idleTimeout() time.Duration {
	if t.IdleTimeout > 0 {
		return t.IdleTimeout
	}
	return 90 * time.Second
}

// maxIdle returns the idle connections kept per host.
func (t *Transport) maxIdle() int {
	if t.MaxIdlePerHost > 0 {
		return t.MaxIdlePerHost
	}
	return 2
}

// MaxDirectBody is the largest request body sent on the calling goroutine: it fits in
// a socket's buffer, so writing it cannot block on a server that answers before it
// reads the body (a refusal), and the answer is then read.
const MaxDirectBody = 64 << 10

// sockConn is one connection with its buffers.
type sockConn struct {
	c  net.Conn
	br *bufio.Reader // reads from lr
	lr limitReader   // bounds the answer's head while it is read
	bw *bufio.Writer // writes to cw
	cw countWriter
	// idleSince is when it was last given back, while kept idle.
	idleSince time.Time
	// gen is Transport.gen when it was dialed.
	gen uint64
}

// MaxAnswerHead bounds the status line and headers of an answer, as net/http's
// Transport bounds them (MaxResponseHeaderBytes).
const MaxAnswerHead = 1 << 20

// ErrAnswerHead is what reading a head larger than MaxAnswerHead gives.
var ErrAnswerHead = fmt.Errorf("synchttp: the answer has more than %d bytes of headers", MaxAnswerHead)

// limitReader reads from its connection while n, the bytes still allowed, is positive.
type limitReader struct {
	c net.Conn
	n int64
}

func (r *limitReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, ErrAnswerHead
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
func (t *Transport) direct(req *http.Request) bool {
	if req.Body != nil && req.Body != http.NoBody &&
		(req.GetBody == nil || req.ContentLength <= 0 || req.ContentLength > MaxDirectBody) {
		return false
	}
	return t.Only == nil || t.Only(req)
}

// RoundTrip sends req and returns the answer, whose body reads from the connection; the
// connection is kept for the next request once the body has been read to its end.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !t.direct(req) {
		if t.Fallback == nil {
			if req.Body != nil {
				_ = req.Body.Close()
			}
			return nil, ErrNoFallback
		}
		return t.Fallback.RoundTrip(req)
	}
	host := req.URL.Host
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
		sc, reused, err := t.get(ctx, host)
		if err != nil {
			if r.Body != nil {
				_ = r.Body.Close()
			}
			return nil, err
		}
		resp, retry, err := t.exchange(ctx, host, sc, r)
		if err == nil {
			return resp, nil
		}
		// Only a kept-alive connection the server had closed (its idle timeout) is worth a
		// second try; each try takes one of the few idle connections or dials a new one.
		if !retry || !reused || attempt >= t.maxIdle() {
			return nil, err
		}
	}
}

// get returns an idle connection to host (reused true) or a new one.
func (t *Transport) get(ctx context.Context, host string) (sc *sockConn, reused bool, err error) {
	t.mu.Lock()
	stale := t.sweepLocked(time.Now())
	if idle := t.idle[host]; len(idle) > 0 {
		n := len(idle)
		sc = idle[n-1]
		idle[n-1] = nil
		t.idle[host] = idle[:n-1]
	}
	t.mu.Unlock()
	closeAll(stale)
	if sc != nil {
		return sc, true, nil
	}
	t.mu.Lock()
	gen := t.gen
	t.mu.Unlock()
	c, err := t.Dial(ctx, host)
	if err != nil {
		return nil, false, err
	}
	sc = &sockConn{c: c, lr: limitReader{c: c}, cw: countWriter{c: c}, gen: gen}
	sc.br = bufio.NewReader(&sc.lr)
	sc.bw = bufio.NewWriter(&sc.cw)
	return sc, false, nil
}

// put keeps sc for the next request to host, or closes it: when enough are kept, when it
// was dialed before the last CloseIdleConnections, or when bytes that no request asked
// for wait on it (net/http's Transport closes such a connection too).
func (t *Transport) put(host string, sc *sockConn) {
	if sc.br.Buffered() > 0 {
		_ = sc.c.Close()
		return
	}
	if err := sc.c.SetDeadline(time.Time{}); err != nil {
		_ = sc.c.Close()
		return
	}
	now := time.Now()
	sc.idleSince = now
	t.mu.Lock()
	stale := t.sweepLocked(now)
	if sc.gen == t.gen && len(t.idle[host]) < t.maxIdle() {
		if t.idle == nil {
			t.idle = map[string][]*sockConn{}
		}
		t.idle[host] = append(t.idle[host], sc)
		sc = nil
	}
	t.mu.Unlock()
	closeAll(stale)
	if sc != nil {
		_ = sc.c.Close()
	}
}

// sweepLocked takes out the connections idle for longer than the idle timeout at now,
// for the caller to close once t.mu is released; t.mu is held.
func (t *Transport) sweepLocked(now time.Time) (stale []*sockConn) {
	limit := now.Add(-t.idleTimeout())
	for host, conns := range t.idle {
		kept := conns[:0]
		for _, sc := range conns {
			if sc.idleSince.Before(limit) {
				stale = append(stale, sc)
			} else {
				kept = append(kept, sc)
			}
		}
		clear(conns[len(kept):])
		if len(kept) == 0 {
			delete(t.idle, host)
		} else {
			t.idle[host] = kept
		}
	}
	return stale
}

// closeAll closes the connections conns.
func closeAll(conns []*sockConn) {
	for _, sc := range conns {
		_ = sc.c.Close()
	}
}

// CloseIdleConnections closes the kept-alive connections that no request uses now, and
// those in use once their request ends (and those of Fallback): the next requests dial
// new ones (after an identity change, say).
func (t *Transport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle = nil
	t.gen++
	t.mu.Unlock()
	for _, conns := range idle {
		closeAll(conns)
	}
	if f, ok := t.Fallback.(interface{ CloseIdleConnections() }); ok {
		f.CloseIdleConnections()
	}
}

// exchange writes req on sc and reads the answer's head. retry says the request may be
// sent again on another connection: the server closed the connection before it took a
// byte of the request, or with no answer to a request that is safe to repeat. sc is
// closed on error.
func (t *Transport) exchange(ctx context.Context, host string, sc *sockConn, req *http.Request) (resp *http.Response, retry bool, err error) {
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
	if trace := httptrace.ContextClientTrace(ctx); trace != nil && trace.WroteRequest != nil {
		trace.WroteRequest(httptrace.WroteRequestInfo{})
	}
	sc.lr.n = MaxAnswerHead
	if _, err = sc.br.Peek(1); err != nil {
		// Nothing of an answer arrived: the server closed the connection (an idle one as the
		// request arrived, or it stops). Only a request that changes nothing is sent again:
		// a change may have been made.
		closed := err == io.EOF || errors.Is(err, syscall.ECONNRESET)
		if err == io.EOF {
			err = io.ErrUnexpectedEOF // what http.ReadResponse says of an answer cut short
		}
		return nil, closed && ctx.Err() == nil && replayable(req), fail(err)
	}
	for {
		resp, err = http.ReadResponse(sc.br, req)
		if err != nil {
			return nil, false, fail(err)
		}
		// An informational answer (100 Continue, 103 Early Hints) comes before the answer
		// to the request, on the same connection: read on, as net/http's Transport does.
		// 101 (a protocol switch) is final; this transport does not upgrade.
		if resp.StatusCode < 100 || resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			break
		}
		if resp.StatusCode != http.StatusContinue {
			if trace := httptrace.ContextClientTrace(ctx); trace != nil && trace.Got1xxResponse != nil {
				if err := trace.Got1xxResponse(resp.StatusCode, textproto.MIMEHeader(resp.Header)); err != nil {
					return nil, false, fail(err)
				}
			}
		}
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return nil, false, fail(errors.New("synchttp: the server switched protocols (101), which this transport does not do"))
	}
	sc.lr.n = math.MaxInt64 // the body's size is the caller's to bound
	keep := !resp.Close && !req.Close
	if resp.ContentLength == 0 && len(resp.TransferEncoding) == 0 {
		// No body (a HEAD, a 204, Content-Length: 0): the connection is free now.
		resp.Body = http.NoBody
		if !stop() || !keep {
			_ = sc.c.Close()
		} else {
			t.put(host, sc)
		}
		return resp, false, nil
	}
	resp.Body = &sockBody{rc: resp.Body, t: t, host: host, sc: sc, ctx: ctx, stop: stop, keep: keep}
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
	t    *Transport
	host string
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
		b.t.put(b.host, b.sc)
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
