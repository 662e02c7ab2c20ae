package mailrepl

import (
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/pmgcm/pmgcm/internal/testutil"
	"github.com/pmgcm/pmgcm/mailstore"
)

// inflight counts the body requests a server is answering at once, and can hold them
// until released, or answer them 404 (the server lacks every body).
type inflight struct {
	mu       sync.Mutex
	now, top int
	gate     chan struct{} // nil: do not hold
	lack     bool
	// noBulk answers PathBodies 404, as a first-release node does.
	noBulk bool
	// singles and bulks count the requests of PathBody and of PathBodies.
	singles, bulks int
	// noEvents answers PathEvents 503: the node's events are learnt from others only.
	noEvents bool
	// tail, when set, holds the end of every answer (after what the handler wrote,
	// which is flushed) until it is closed.
	tail chan struct{}
}

func (f *inflight) hold() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gate = make(chan struct{})
}

func (f *inflight) release() {
	f.mu.Lock()
	defer f.mu.Unlock()
	close(f.gate)
	f.gate = nil
}

func (f *inflight) lackBodies(on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lack = on
}

func (f *inflight) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !isBodyPath(r.URL.Path) {
			f.mu.Lock()
			no := f.noEvents && r.URL.Path == PathEvents
			f.mu.Unlock()
			if no {
				http.Error(w, "no events here", http.StatusServiceUnavailable)
				return
			}
			h.ServeHTTP(w, r)
			return
		}
		f.mu.Lock()
		if r.URL.Path == PathBodies {
			f.bulks++
		} else {
			f.singles++
		}
		if f.lack || f.noBulk && r.URL.Path == PathBodies {
			f.mu.Unlock()
			http.NotFound(w, r)
			return
		}
		f.now++
		f.top = max(f.top, f.now)
		gate, tail := f.gate, f.tail
		f.mu.Unlock()
		defer func() {
			f.mu.Lock()
			f.now--
			f.mu.Unlock()
		}()
		if gate != nil {
			select {
			case <-gate:
			case <-r.Context().Done(): // the asker gave up
				return
			}
		}
		h.ServeHTTP(w, r)
		if tail != nil {
			w.(http.Flusher).Flush()
			select {
			case <-tail:
			case <-r.Context().Done():
			}
		}
	})
}

// requests returns how many requests of PathBody and of PathBodies came in.
func (f *inflight) requests() (singles, bulks int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.singles, f.bulks
}

func (f *inflight) counts() (now, top int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now, f.top
}

// TestBodiesFetchedConcurrently: a node that lacks many bodies has several transfers in
// flight at once, never more than Fetchers, and ends with every body, whole.
func TestBodiesFetchedConcurrently(t *testing.T) {
	c := newCluster(t, 2)
	const fetchers = 4
	fl := c.nodes[0].fl
	fl.hold()
	r, err := New(withFetchers(c.nodes[1].repl.cfg, fetchers, 8))
	if err != nil {
		t.Fatal(err)
	}
	c.nodes[1].repl = r
	t.Cleanup(func() { _ = r.Close() })
	var ms []mailstore.Meta
	for k := 0; k < 60; k++ {
		ms = append(ms, c.accept(0, 2000+k))
	}
	c.start(1)
	// Held at the server, the fetchers fill up to their number, and no further.
	testutil.Poll(t, "every fetcher busy", settle, func() error {
		if now, _ := fl.counts(); now != fetchers {
			return fmt.Errorf("%d body requests in flight, want %d", now, fetchers)
		}
		return nil
	})
	fl.release()
	testutil.Poll(t, "every body on node 1", settle, c.verified(1, ms...))
	testutil.Poll(t, "backlog 0", settle, testutil.Cond(func() bool { return c.backlogZero(1) }))
	if _, top := fl.counts(); top > fetchers {
		t.Fatalf("%d body requests at once, want at most %d", top, fetchers)
	}
}

// TestSweepFetchesWhatLoopsCouldNot: bodies the peer loops could not get (no peer had
// them yet) are fetched later by the sweeper, through the same workers.
func TestSweepFetchesWhatLoopsCouldNot(t *testing.T) {
	c := newCluster(t, 3)
	var ms []mailstore.Meta
	for k := 0; k < 30; k++ {
		ms = append(ms, c.accept(0, 1000+k))
	}
	c.nodes[0].fl.lackBodies(true)
	c.start(1)
	testutil.Poll(t, "node 1 knows every message", settle, func() error {
		if n, _ := c.nodes[1].store.Stats(); n != int64(len(ms)) {
			return fmt.Errorf("%d messages", n)
		}
		if missing, _ := c.nodes[1].store.Missing(); len(missing) != len(ms) {
			return fmt.Errorf("%d bodies missing, want %d", len(missing), len(ms))
		}
		return nil
	})
	c.nodes[0].fl.lackBodies(false) // the sweeper's retry (1 s doubling) now finds them
	testutil.Poll(t, "every body on node 1", settle, c.verified(1, ms...))
	testutil.Poll(t, "backlog 0", settle, testutil.Cond(func() bool { return c.backlogZero(1) }))
}

func withFetchers(cfg Config, n, queue int) Config {
	cfg.Fetchers, cfg.FetchQueue = n, queue
	return cfg
}

// TestBacklogState: the state status shows is unknown before the peers are polled, then
// counts the bodies still missing, and reaches zero once they are all here.
func TestBacklogState(t *testing.T) {
	c := newCluster(t, 2)
	var ms []mailstore.Meta
	for k := 0; k < 20; k++ {
		ms = append(ms, c.accept(0, 1500+k))
	}
	if b := c.nodes[1].repl.BacklogState(); b.Known {
		t.Fatalf("backlog %+v known before any peer was polled", b)
	}
	c.nodes[0].fl.hold()
	c.start(1)
	testutil.Poll(t, "every body counted missing", settle, func() error {
		if b := c.nodes[1].repl.BacklogState(); !b.Known || b.Messages != int64(len(ms)) || b.Bytes == 0 {
			return fmt.Errorf("backlog %+v, want %d messages known", b, len(ms))
		}
		return nil
	})
	c.nodes[0].fl.release()
	testutil.Poll(t, "backlog 0", settle, func() error {
		if b := c.nodes[1].repl.BacklogState(); !b.Known || b.Messages != 0 || b.Bytes != 0 {
			return fmt.Errorf("backlog %+v", b)
		}
		return nil
	})
	testutil.Poll(t, "every body on node 1", settle, c.verified(1, ms...))
}

// TestTransfersEndWhenPeerLeaves: the bodies in transfer from a peer that stops being a
// member (removed, fenced) are cut at once, not left to finish.
func TestTransfersEndWhenPeerLeaves(t *testing.T) {
	c := newCluster(t, 2)
	var gone atomic.Bool
	cfg := withFetchers(c.nodes[1].repl.cfg, 4, 8)
	all := cfg.Peers
	cfg.Peers = func() []Peer {
		if gone.Load() {
			return nil
		}
		return all()
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.nodes[1].repl = r
	t.Cleanup(func() { _ = r.Close() })
	for k := 0; k < 20; k++ {
		c.accept(0, 3000+k)
	}
	fl := c.nodes[0].fl
	fl.hold()
	t.Cleanup(fl.release)
	c.start(1)
	testutil.Poll(t, "transfers in flight", settle, func() error {
		if now, _ := fl.counts(); now != 4 {
			return fmt.Errorf("%d body requests in flight, want 4", now)
		}
		return nil
	})
	gone.Store(true)
	testutil.Poll(t, "the transfers from the departed peer cut", settle, func() error {
		if now, _ := fl.counts(); now != 0 {
			return fmt.Errorf("%d body requests still in flight", now)
		}
		return nil
	})
}
