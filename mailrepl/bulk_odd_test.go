package mailrepl

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/mailstore"
)

// bulkPeer is node 1 of a 2-node cluster that knows (by their events) n messages node
// 0 holds and lacks their bodies, and a fake peer whose answers to PathBodies a test
// writes (answer), with the bodies of node 0 at hand. fetchBulk runs against it: the
// peer has a loop (loopContext), the replicator is not started.
type bulkPeer struct {
	c      *cluster
	r      *Replicator
	dst    *mailstore.Store
	p      Peer
	ms     []mailstore.Meta
	bodies map[string][]byte
	answer func(w http.ResponseWriter, r *http.Request, ids []string)
}

func newBulkPeer(t *testing.T, n int) *bulkPeer {
	t.Helper()
	c := newCluster(t, 2)
	src, dst := c.nodes[0].store, c.nodes[1].store
	b := &bulkPeer{c: c, r: c.nodes[1].repl, dst: dst, bodies: map[string][]byte{}}
	for k := 0; k < n; k++ {
		m := c.accept(0, 3000+k)
		f, _, err := src.OpenBody(m.ID)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		b.ms, b.bodies[m.ID] = append(b.ms, m), body
	}
	evs, _, _, err := src.Feed(dst.FeedHeads(), 100)
	if err != nil {
		t.Fatal(err)
	}
	if need, err := dst.ApplyEvents(evs); err != nil || len(need) != n {
		t.Fatalf("need %v: %v", need, err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.answer(w, r, strings.Split(r.URL.Query().Get("ids"), ","))
	}))
	t.Cleanup(srv.Close)
	b.p = Peer{CID: 9, Addr: strings.TrimPrefix(srv.URL, "http://")}
	ctx, cancel := context.WithCancel(b.r.ctx)
	t.Cleanup(cancel)
	b.r.mu.Lock()
	b.r.loops[b.p] = &peerLoop{ctx: ctx, cancel: cancel, wake: make(chan struct{}, 1)}
	b.r.mu.Unlock()
	return b
}

// frame writes the frame serveFrame writes for the body of m.
func (b *bulkPeer) frame(w io.Writer, m mailstore.Meta) {
	fmt.Fprintf(w, "%s %d %s\n", m.ID, m.Size, m.SHA256)
	_, _ = w.Write(b.bodies[m.ID])
}

func (b *bulkPeer) ids() []string {
	var out []string
	for _, m := range b.ms {
		out = append(out, m.ID)
	}
	return out
}

// check fails unless exactly the bodies of held are here and every other ID is
// free for another writer (no BodyWriter of fetchBulk still holds it).
func (b *bulkPeer) check(t *testing.T, held ...string) {
	t.Helper()
	for _, m := range b.ms {
		has := b.dst.HasBody(m.ID)
		if has != slices.Contains(held, m.ID) {
			t.Errorf("%s: held %v, want %v", m.ID, has, !has)
		}
		if has {
			continue
		}
		w, _, err := b.dst.BeginBody(m.ID)
		if err != nil {
			t.Errorf("%s: BeginBody after fetchBulk: %v (a writer was not let go)", m.ID, err)
			continue
		}
		_ = w.Close()
	}
}

// TestBulkOddAnswers: whatever a peer answers to PathBodies, fetchBulk commits only
// the bodies that came whole and match, lets go of every writer, and returns every
// other ID for the one-by-one path.
func TestBulkOddAnswers(t *testing.T) {
	for _, tc := range []struct {
		name   string
		answer func(b *bulkPeer, w http.ResponseWriter, ids []string)
		held   []int // indexes of b.ms committed from the answer
	}{
		{"all", func(b *bulkPeer, w http.ResponseWriter, _ []string) {
			for _, m := range b.ms {
				b.frame(w, m)
			}
		}, []int{0, 1, 2, 3}},
		{"a body's bytes differ", func(b *bulkPeer, w http.ResponseWriter, _ []string) {
			for i, m := range b.ms {
				if i == 1 {
					body := slices.Clone(b.bodies[m.ID])
					body[len(body)-1] ^= 1
					fmt.Fprintf(w, "%s %d %s\n", m.ID, m.Size, m.SHA256)
					_, _ = w.Write(body)
					continue
				}
				b.frame(w, m)
			}
		}, []int{0, 2, 3}},
		{"a frame names a body not asked for", func(b *bulkPeer, w http.ResponseWriter, _ []string) {
			b.frame(w, b.ms[0])
			// The body due is that of ms[1]; its bytes, size and SHA-256 come
			// under another ID.
			m := b.ms[1]
			fmt.Fprintf(w, "%s %d %s\n", mailstore.MakeID(7, 7), m.Size, m.SHA256)
			_, _ = w.Write(b.bodies[m.ID])
			b.frame(w, b.ms[2])
			b.frame(w, b.ms[3])
		}, []int{0}},
		{"frames out of order", func(b *bulkPeer, w http.ResponseWriter, _ []string) {
			b.frame(w, b.ms[1])
			b.frame(w, b.ms[0])
		}, nil},
		{"more than asked for", func(b *bulkPeer, w http.ResponseWriter, _ []string) {
			for _, m := range b.ms {
				b.frame(w, m)
			}
			b.frame(w, b.ms[0])
		}, []int{0, 1, 2, 3}},
		{"a head too long", func(b *bulkPeer, w http.ResponseWriter, _ []string) {
			b.frame(w, b.ms[0])
			_, _ = io.WriteString(w, strings.Repeat("1", 5000))
		}, []int{0}},
		{"cut in a body", func(b *bulkPeer, w http.ResponseWriter, _ []string) {
			b.frame(w, b.ms[0])
			m := b.ms[1]
			fmt.Fprintf(w, "%s %d %s\n", m.ID, m.Size, m.SHA256)
			_, _ = w.Write(b.bodies[m.ID][:1000])
		}, []int{0}},
		{"404", func(b *bulkPeer, w http.ResponseWriter, _ []string) { http.NotFound(w, nil) }, nil},
		{"500", func(b *bulkPeer, w http.ResponseWriter, _ []string) {
			http.Error(w, "no", http.StatusInternalServerError)
		}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBulkPeer(t, 4)
			b.answer = func(w http.ResponseWriter, _ *http.Request, ids []string) { tc.answer(b, w, ids) }
			left := b.r.fetchBulk(context.Background(), b.p, b.ids())
			var held, want []string
			for i, m := range b.ms {
				if slices.Contains(tc.held, i) {
					held = append(held, m.ID)
				} else {
					want = append(want, m.ID)
				}
			}
			slices.Sort(left)
			slices.Sort(want)
			if !slices.Equal(left, want) {
				t.Errorf("left %v, want %v", left, want)
			}
			b.check(t, held...)
		})
	}
}

// TestBulkLeavesPartialToResume: a body of which a partial file is here already is
// left out of the bulk request, for fetchBody to resume it at its offset; the others
// come in the answer.
func TestBulkLeavesPartialToResume(t *testing.T) {
	b := newBulkPeer(t, 3)
	part := b.ms[0]
	w, _, err := b.dst.BeginBody(part.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(b.bodies[part.ID][:1000]); err != nil {
		t.Fatal(err)
	}
	_ = w.Close()
	asked := make(chan []string, 1)
	b.answer = func(w http.ResponseWriter, _ *http.Request, ids []string) {
		asked <- ids
		for _, id := range ids {
			for _, m := range b.ms {
				if m.ID == id {
					b.frame(w, m)
				}
			}
		}
	}
	left := b.r.fetchBulk(context.Background(), b.p, b.ids())
	if ids := <-asked; !slices.Equal(left, []string{part.ID}) || slices.Contains(ids, part.ID) {
		t.Fatalf("left %v, asked for %v; want only %s left, not asked for", left, ids, part.ID)
	}
	b.check(t, b.ms[1].ID, b.ms[2].ID)
	if st, err := os.Stat(b.dst.BodyPath(part.ID) + ".part"); err != nil || st.Size() != 1000 {
		t.Fatalf("partial file: %v %v, want its 1000 bytes kept", st, err)
	}
}

// TestHandlerBodiesCorrupt: a body that fails the serving node's check on the way out
// cuts the PathBodies answer (the asker must not see it end well) and is moved aside
// there, to be fetched again from a peer.
func TestHandlerBodiesCorrupt(t *testing.T) {
	c := newCluster(t, 1) // node 0 serves Handler on its address
	st := c.nodes[0].store
	a, bad := c.accept(0, 3000), c.accept(0, 5000)
	corrupt(t, st, bad.ID)
	resp, err := http.Get("http://" + c.nodes[0].addr + PathBodies + "?ids=" + a.ID + "," + bad.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if _, err := io.ReadAll(resp.Body); err == nil {
		t.Fatal("the answer with a corrupt body ended well")
	}
	missing, err := st.Missing()
	if err != nil || len(missing) != 1 || missing[0].ID != bad.ID {
		t.Fatalf("missing %v (%v), want %s moved aside", missing, err, bad.ID)
	}
}

// TestBulkStall: a peer that stops sending in the middle of an answer is cut after
// StallTimeout without progress; what came whole is committed, the rest is left.
func TestBulkStall(t *testing.T) {
	b := newBulkPeer(t, 3)
	b.r.cfg.StallTimeout = 300 * time.Millisecond
	b.answer = func(w http.ResponseWriter, r *http.Request, _ []string) {
		b.frame(w, b.ms[0])
		m := b.ms[1]
		fmt.Fprintf(w, "%s %d %s\n", m.ID, m.Size, m.SHA256)
		_, _ = w.Write(b.bodies[m.ID][:100])
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}
	done := make(chan []string, 1)
	go func() { done <- b.r.fetchBulk(context.Background(), b.p, b.ids()) }()
	select {
	case left := <-done:
		if !slices.Equal(left, []string{b.ms[1].ID, b.ms[2].ID}) {
			t.Fatalf("left %v", left)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a stalled answer held fetchBulk for 10 s (StallTimeout 300 ms)")
	}
	b.check(t, b.ms[0].ID)
}

// TestBulkSlowButSteady: the stall watchdog counts from the last progress, not from the
// request: an answer longer than StallTimeout in all, which never pauses that long, is
// not cut.
func TestBulkSlowButSteady(t *testing.T) {
	b := newBulkPeer(t, 5)
	b.r.cfg.StallTimeout = time.Second
	b.answer = func(w http.ResponseWriter, _ *http.Request, _ []string) {
		for _, m := range b.ms {
			b.frame(w, m)
			w.(http.Flusher).Flush()
			time.Sleep(300 * time.Millisecond) // the peer's pace, 1.5 s in all
		}
	}
	if left := b.r.fetchBulk(context.Background(), b.p, b.ids()); len(left) != 0 {
		t.Fatalf("left %v", left)
	}
	b.check(t, b.ids()...)
}

// TestHandlerBodiesHugeQuery: a PathBodies request naming far more than MaxBulkIDs IDs
// is refused without splitting all of them (a query of 1 MiB of commas, which the HTTP
// server's header limit lets through, made 16 MiB of strings).
func TestHandlerBodiesHugeQuery(t *testing.T) {
	c := newCluster(t, 1)
	h := Handler(c.nodes[0].store)
	req := httptest.NewRequest(http.MethodGet, "http://peer"+PathBodies+"?ids="+strings.Repeat(",", 1<<20), nil)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	runtime.ReadMemStats(&after)
	if rec.Code != http.StatusBadRequest {
		t.Fatalf("status %d", rec.Code)
	}
	// The query's parse copies it (1 MiB); the IDs' split must not add 16 MiB.
	if n := after.TotalAlloc - before.TotalAlloc; n > 6<<20 {
		t.Fatalf("%d MiB allocated to refuse the request", n>>20)
	}
}
