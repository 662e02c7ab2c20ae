package mailrepl

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/pmgcm/pmgcm/mailstore"
)

// node is one member of a test cluster: a store, its HTTP server on
// 127.0.0.1:0 and a replicator pulling from the other nodes.
type node struct {
	cid   uint64
	store *mailstore.Store
	addr  string
	srv   *http.Server
	cut   *cutter
	fl    *inflight // counts (and can hold) the body requests it answers
	// accepts counts the connections its server accepted.
	accepts *atomic.Int64
	repl    *Replicator
}

type cluster struct {
	t     *testing.T
	nodes []*node
	// bulk is every replicator's Config.Bulk: off (one request per body) unless a
	// test turns it on.
	bulk atomic.Bool
}

// newCluster starts n stores and servers; replicators are made, not started.
func newCluster(t *testing.T, n int) *cluster {
	t.Helper()
	c := &cluster{t: t}
	for i := 0; i < n; i++ {
		cid := uint64(i + 1)
		st, err := mailstore.Open(t.TempDir(), mailstore.Options{LocalCID: func() uint64 { return cid }, Timeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		nd := &node{cid: cid, store: st, addr: ln.Addr().String(), cut: &cutter{}, fl: &inflight{}, accepts: new(atomic.Int64)}
		nd.srv = &http.Server{Handler: nd.fl.wrap(nd.cut.wrap(Handler(st))), ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = nd.srv.Serve(countListener{ln, nd.accepts}) }()
		t.Cleanup(func() { _ = nd.srv.Close() })
		c.nodes = append(c.nodes, nd)
	}
	for _, nd := range c.nodes {
		cfg := DefaultConfig()
		cfg.Store = nd.store
		cfg.Client = testClient(cfg.Fetchers)
		cfg.Peers = c.peersOf()
		cfg.Bulk = c.bulk.Load
		cfg.Logger = hclog.New(&hclog.LoggerOptions{Name: "n" + strconv.FormatUint(nd.cid, 10), Level: hclog.Warn, Output: testWriter{t}})
		cfg.PollWait = 2 * time.Second
		cfg.PeerRefresh = 50 * time.Millisecond
		cfg.MissingInterval = 2 * time.Second
		cfg.MinBackoff, cfg.MaxBackoff = 10*time.Millisecond, 200*time.Millisecond
		r, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		nd.repl = r
		t.Cleanup(func() { _ = r.Close() })
	}
	return c
}

// testClient is the daemon's client (NewHTTPClient) over plain TCP: the body fetches go
// over synchttp, the events polls over a net/http Transport with the mux's
// response-header timeout.
func testClient(fetchers int) *http.Client {
	var d net.Dialer
	return NewHTTPClient(func(ctx context.Context, addr string) (net.Conn, error) {
		return d.DialContext(ctx, "tcp", addr)
	}, &http.Transport{ResponseHeaderTimeout: 30 * time.Second}, fetchers)
}

// peersOf lists every node (the replicator skips its own CID).
func (c *cluster) peersOf() func() []Peer {
	return func() []Peer {
		var out []Peer
		for _, nd := range c.nodes {
			out = append(out, Peer{CID: nd.cid, Addr: nd.addr})
		}
		return out
	}
}

func (c *cluster) start(idx ...int) {
	for _, i := range idx {
		c.nodes[i].repl.Start()
	}
}

// accept stores a random message of size bytes on node i.
func (c *cluster) accept(i, size int) mailstore.Meta {
	c.t.Helper()
	body := make([]byte, size)
	_, _ = rand.Read(body)
	raw := append([]byte("Subject: test "+strconv.Itoa(size)+"\r\n\r\n"), body...)
	m, err := c.nodes[i].store.Accept("from@example.org", []string{"to@example.net"}, bytes.NewReader(raw))
	if err != nil {
		c.t.Fatal(err)
	}
	// Indexed before it returns (Get waits for the intake journal), as a message is
	// before any peer can learn of it: the feed serves what the index has committed.
	if _, err := c.nodes[i].store.Get(m.ID); err != nil {
		c.t.Fatal(err)
	}
	return m
}

// hasAll reports whether node i holds every message of ms with a body whose
// SHA-256 matches.
func (c *cluster) hasAll(i int, ms []mailstore.Meta) bool {
	st := c.nodes[i].store
	for _, m := range ms {
		f, got, err := st.OpenBody(m.ID)
		if err != nil {
			return false
		}
		h := sha256.New()
		_, err = io.Copy(h, f)
		_ = f.Close()
		if err != nil || got.SHA256 != m.SHA256 || hex.EncodeToString(h.Sum(nil)) != m.SHA256 {
			return false
		}
	}
	return true
}

// verified returns a condition for testutil.Poll: node i has every one of ms, with a
// whole body that Verify accepts. Verify answers ErrBusy while the replicator still holds a
// body it has just written, so a test that waits for hasAll alone and then calls Verify
// fails now and then (3 runs in 40 did).
func (c *cluster) verified(i int, ms ...mailstore.Meta) func() error {
	return func() error {
		if !c.hasAll(i, ms) {
			return fmt.Errorf("node %d lacks a message or a whole body", i)
		}
		for _, m := range ms {
			if err := c.nodes[i].store.Verify(m.ID); err != nil {
				return fmt.Errorf("node %d: %w", i, err)
			}
		}
		return nil
	}
}

func (c *cluster) backlogZero(i int) bool {
	m, b := c.nodes[i].repl.Backlog()
	return m == 0 && b == 0
}

// isBodyPath says whether a request asks for a body or several.
func isBodyPath(p string) bool { return strings.HasPrefix(p, PathBody) || p == PathBodies }

// cutter breaks the first body response after `after` bytes when armed, and
// records the offsets asked for.
type cutter struct {
	armed   atomic.Bool
	after   int
	mu      sync.Mutex
	offsets []int64
}

func (c *cutter) arm(after int) {
	c.after = after
	c.armed.Store(true)
}

func (c *cutter) seen() []int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]int64(nil), c.offsets...)
}

func (c *cutter) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !isBodyPath(r.URL.Path) {
			h.ServeHTTP(w, r)
			return
		}
		off, _ := strconv.ParseInt(r.URL.Query().Get("offset"), 10, 64)
		c.mu.Lock()
		c.offsets = append(c.offsets, off)
		c.mu.Unlock()
		if !c.armed.CompareAndSwap(true, false) {
			h.ServeHTTP(w, r)
			return
		}
		h.ServeHTTP(&cutWriter{ResponseWriter: w, left: c.after}, r)
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // drop the connection mid-body
	})
}

type cutWriter struct {
	http.ResponseWriter
	left int
}

func (w *cutWriter) Write(p []byte) (int, error) {
	if len(p) <= w.left {
		w.left -= len(p)
		return w.ResponseWriter.Write(p)
	}
	n, _ := w.ResponseWriter.Write(p[:w.left])
	w.left = 0
	return n, io.ErrClosedPipe
}

// countListener counts the connections it accepts in n.
type countListener struct {
	net.Listener
	n *atomic.Int64
}

func (l countListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// testWriter sends log lines to t.Log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
