package mailrepl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/internal/testutil"
	"github.com/pmgcm/pmgcm/mailstore"
)

// Modes of a stallServer's body answers.
const (
	answerAll  int32 = iota // serve the body
	stallHead               // take the request, never answer
	stallMidst              // send the head and stallAfter bytes of the body, then nothing
)

// stallAfter is how much of a body a stallServer in stallMidst sends.
const stallAfter = 20_000

// stallServer serves a store's events and bodies on its own listener; its body answers
// can stall (mode). It counts the connections it accepts and the body requests it
// held until their asker gave up (cut).
type stallServer struct {
	addr    string
	mode    atomic.Int32
	accepts atomic.Int64
	asked   atomic.Int64 // body requests taken
	cut     atomic.Int64 // body requests that stalled until the asker gave up
}

func newStallServer(t *testing.T, st *mailstore.Store) *stallServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &stallServer{addr: ln.Addr().String()}
	h := Handler(st)
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, PathBody) {
			h.ServeHTTP(w, r)
			return
		}
		s.asked.Add(1)
		switch s.mode.Load() {
		case stallHead:
			<-r.Context().Done()
			s.cut.Add(1)
			return
		case stallMidst:
			h.ServeHTTP(&stallWriter{ResponseWriter: w, left: stallAfter, ctx: r.Context(), cut: &s.cut}, r)
			return
		}
		h.ServeHTTP(w, r)
	})}
	go func() { _ = srv.Serve(countListener{ln, &s.accepts}) }()
	t.Cleanup(func() { _ = srv.Close() })
	return s
}

// stallWriter writes left bytes of a body, flushes them, then waits for the asker to give up.
type stallWriter struct {
	http.ResponseWriter
	left int
	ctx  context.Context
	cut  *atomic.Int64
}

func (w *stallWriter) Write(p []byte) (int, error) {
	if len(p) <= w.left {
		w.left -= len(p)
		return w.ResponseWriter.Write(p)
	}
	n, _ := w.ResponseWriter.Write(p[:w.left])
	w.left = 0
	w.ResponseWriter.(http.Flusher).Flush()
	<-w.ctx.Done()
	w.cut.Add(1)
	return n, w.ctx.Err()
}

// fetcher replaces node i's replicator (not started) by one with peers and StallTimeout stall.
func (c *cluster) fetcher(i int, peers func() []Peer, stall time.Duration) *Replicator {
	c.t.Helper()
	cfg := c.nodes[i].repl.cfg
	cfg.Peers, cfg.StallTimeout = peers, stall
	r, err := New(cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	c.nodes[i].repl = r
	c.t.Cleanup(func() { _ = r.Close() })
	return r
}

// learn applies p's events to r's store, so that r may fetch their bodies.
func learn(t *testing.T, r *Replicator, p Peer) {
	t.Helper()
	resp, err := r.pollEvents(context.Background(), p, MaxBatch, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.store.ApplyEvents(resp.Events); err != nil {
		t.Fatal(err)
	}
}

// timedTransfer runs one transfer of m's body from p into r's store, bounded by a
// context of 10 s, and returns how many bytes came, how long it took and the error.
func timedTransfer(t *testing.T, r *Replicator, p Peer, m mailstore.Meta) (int64, time.Duration, error) {
	t.Helper()
	w, off, err := r.store.BeginBody(m.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	n, err := r.transfer(ctx, p, w, off)
	return n, time.Since(start), err
}

const testStall = 300 * time.Millisecond

// TestStalledHeadCut: a peer that takes a body request and never answers its head is cut
// after StallTimeout (the client has no response-header timeout), not after the caller's
// context. It fails when the stall watch starts only once the head is in.
func TestStalledHeadCut(t *testing.T) {
	c := newCluster(t, 2)
	m := c.accept(0, 50_000)
	s := newStallServer(t, c.nodes[0].store)
	s.mode.Store(stallHead)
	p := Peer{CID: 1, Addr: s.addr}
	r := c.fetcher(1, func() []Peer { return []Peer{p} }, testStall)
	learn(t, r, p)
	n, took, err := timedTransfer(t, r, p, m)
	if !errors.Is(err, errStalled) || n != 0 {
		t.Fatalf("transfer from a peer that never answers: %d bytes, error %v after %s; want 0 bytes and %v",
			n, err, took, errStalled)
	}
	if took < testStall || took > testStall+3*time.Second {
		t.Fatalf("the stalled request was cut after %s; want about %s", took, testStall)
	}
	testutil.Poll(t, "the peer sees the asker give up", settle, func() error {
		if got := s.cut.Load(); got != 1 {
			return fmt.Errorf("%d requests given up, want 1", got)
		}
		return nil
	})
}

// TestStalledBodyCut: a peer that sends the head and part of a body, then nothing, is cut
// after StallTimeout with what came kept; the next transfer resumes from there.
func TestStalledBodyCut(t *testing.T) {
	c := newCluster(t, 2)
	m := c.accept(0, 100_000)
	s := newStallServer(t, c.nodes[0].store)
	s.mode.Store(stallMidst)
	p := Peer{CID: 1, Addr: s.addr}
	r := c.fetcher(1, func() []Peer { return []Peer{p} }, testStall)
	learn(t, r, p)
	n, took, err := timedTransfer(t, r, p, m)
	if !errors.Is(err, errStalled) || n != stallAfter {
		t.Fatalf("transfer from a peer that stalls mid-body: %d bytes, error %v after %s; want %d bytes and %v",
			n, err, took, stallAfter, errStalled)
	}
	if took < testStall || took > testStall+3*time.Second {
		t.Fatalf("the stalled body was cut after %s; want about %s", took, testStall)
	}
	s.mode.Store(answerAll)
	w, off, err := r.store.BeginBody(m.ID)
	if err != nil {
		t.Fatal(err)
	}
	if off != stallAfter {
		_ = w.Close()
		t.Fatalf("resume at %d, want %d", off, stallAfter)
	}
	if _, err := r.transfer(context.Background(), p, w, off); err != nil {
		_ = w.Close()
		t.Fatal(err)
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := c.verified(1, m)(); err != nil {
		t.Fatal(err)
	}
}

// TestStalledPeerSkipped: a replicator whose first source never answers a body's head
// gets the body from another peer that holds it. Without a bound on the head, the stalled
// fetch holds the body (ErrBusy for every other try) and it never arrives.
func TestStalledPeerSkipped(t *testing.T) {
	c := newCluster(t, 3)
	m := c.accept(0, 50_000)
	c.start(1)
	testutil.Poll(t, "the message on node 1", settle, c.verified(1, m))
	s := newStallServer(t, c.nodes[0].store)
	s.mode.Store(stallHead)
	stalled, other := Peer{CID: 1, Addr: s.addr}, Peer{CID: 2, Addr: c.nodes[1].addr}
	// Node 1 is a peer only once the stalling origin has been asked for the body: the
	// first fetch goes to the origin.
	r := c.fetcher(2, func() []Peer {
		if s.asked.Load() == 0 {
			return []Peer{stalled}
		}
		return []Peer{stalled, other}
	}, testStall)
	r.Start()
	testutil.Poll(t, "the message on node 2", settle, c.verified(2, m))
	if s.cut.Load() == 0 {
		t.Fatalf("no body request to the stalled peer was given up (%d asked)", s.asked.Load())
	}
}

// TestBodyConnectionsReused: bodies fetched from one peer reuse kept-alive connections:
// a node fetching 200 bodies with 8 fetchers opens no more than 8 connections for them
// (and one or two for the events polls). It fails when fewer connections than fetchers
// are kept idle per peer (net/http's default of 2, say).
func TestBodyConnectionsReused(t *testing.T) {
	c := newCluster(t, 2)
	const fetchers = 8
	cfg := withFetchers(c.nodes[1].repl.cfg, fetchers, 64)
	cfg.Client = testClient(fetchers)
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.nodes[1].repl = r
	t.Cleanup(func() { _ = r.Close() })
	var ms []mailstore.Meta
	for k := 0; k < 200; k++ {
		ms = append(ms, c.accept(0, 2000+k))
	}
	c.start(1)
	testutil.Poll(t, "every body on node 1", settle, c.verified(1, ms...))
	if got := c.nodes[0].accepts.Load(); got > fetchers+2 {
		t.Fatalf("200 bodies from one peer took %d connections, want at most %d", got, fetchers+2)
	}
	t.Logf("200 bodies over %d connections", c.nodes[0].accepts.Load())
}

// TestClientSendsOnlyBodiesDirectly: NewHTTPClient dials (synchttp) for a body request
// only; an events request goes to the fallback, and both are answered.
func TestClientSendsOnlyBodiesDirectly(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(r.URL.Path))
	}))
	t.Cleanup(srv.Close)
	var dials, fallback atomic.Int64
	var d net.Dialer
	hc := NewHTTPClient(func(ctx context.Context, addr string) (net.Conn, error) {
		dials.Add(1)
		return d.DialContext(ctx, "tcp", addr)
	}, roundTripFunc(func(req *http.Request) (*http.Response, error) {
		fallback.Add(1)
		return http.DefaultTransport.RoundTrip(req)
	}), 0)
	t.Cleanup(hc.CloseIdleConnections)
	get := func(path string) {
		t.Helper()
		resp, err := hc.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil || string(b) != path {
			t.Fatalf("GET %s: %q, %v", path, b, err)
		}
	}
	for range 3 {
		get(PathBody + "x")
	}
	if dials.Load() != 1 || fallback.Load() != 0 {
		t.Fatalf("3 body requests: %d dials, %d on the fallback; want 1 and 0", dials.Load(), fallback.Load())
	}
	get(PathEvents)
	if dials.Load() != 1 || fallback.Load() != 1 {
		t.Fatalf("an events request: %d dials, %d on the fallback; want 1 and 1", dials.Load(), fallback.Load())
	}
}

// roundTripFunc is an http.RoundTripper made of a function.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }
