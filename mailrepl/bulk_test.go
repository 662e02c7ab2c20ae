package mailrepl

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/internal/testutil"
	"github.com/pmgcm/pmgcm/mailstore"
)

// bulkSource is a 2-node cluster whose node 0 holds n messages of size bytes and node
// 1, with Config.Bulk as bulk, has not started: its first poll brings every event in
// one answer, and node 0 is its only peer.
func bulkSource(t *testing.T, bulk bool, n, size int) (*cluster, []mailstore.Meta) {
	t.Helper()
	c := newCluster(t, 2)
	c.bulk.Store(bulk)
	var ms []mailstore.Meta
	for k := 0; k < n; k++ {
		ms = append(ms, c.accept(0, size))
	}
	return c, ms
}

// TestBulkFetch: with Config.Bulk the bodies of one events answer come in one request of
// PathBodies, except one too large for it (fetched alone, resumable); without it, one
// request each.
func TestBulkFetch(t *testing.T) {
	for _, bulk := range []bool{true, false} {
		t.Run(map[bool]string{true: "bulk", false: "one by one"}[bulk], func(t *testing.T) {
			c, ms := bulkSource(t, bulk, 20, 20_000)
			ms = append(ms, c.accept(0, bulkMaxBody+1000))
			c.start(1)
			testutil.Poll(t, "every body on node 1", settle, c.verified(1, ms...))
			singles, bulks := c.nodes[0].fl.requests()
			if want := map[bool][2]int{true: {1, 1}, false: {21, 0}}[bulk]; singles != want[0] || bulks != want[1] {
				t.Fatalf("%d single and %d bulk requests, want %v", singles, bulks, want)
			}
			testutil.Poll(t, "backlog 0", settle, testutil.Cond(func() bool { return c.backlogZero(1) }))
		})
	}
}

// TestBulkOlderPeer: a peer that does not serve PathBodies (a first-release node answers
// 404) still gives every body, one request each.
func TestBulkOlderPeer(t *testing.T) {
	c, ms := bulkSource(t, true, 10, 5_000)
	c.nodes[0].fl.noBulk = true
	c.start(1)
	testutil.Poll(t, "every body on node 1", settle, c.verified(1, ms...))
	if singles, bulks := c.nodes[0].fl.requests(); singles != 10 || bulks != 1 {
		t.Fatalf("%d single and %d bulk requests, want 10 and 1", singles, bulks)
	}
}

// TestBulkCutResumes: an answer cut in the middle of its third body leaves the two
// before it committed, and the third resumes at its offset alone.
func TestBulkCutResumes(t *testing.T) {
	c, ms := bulkSource(t, true, 5, 50_000)
	c.nodes[0].cut.arm(120_000)
	c.start(1)
	testutil.Poll(t, "every body on node 1", settle, c.verified(1, ms...))
	resumed := slices.ContainsFunc(c.nodes[0].cut.seen(), func(off int64) bool { return off > 0 })
	if c.nodes[0].cut.armed.Load() || !resumed {
		t.Fatalf("no resumed transfer: offsets %v", c.nodes[0].cut.seen())
	}
	if singles, _ := c.nodes[0].fl.requests(); singles > 3 {
		t.Fatalf("%d single requests: the bodies before the cut were fetched again", singles)
	}
	for _, m := range ms {
		if _, err := os.Stat(c.nodes[1].store.BodyPath(m.ID) + ".part"); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("a partial file is left: %v", err)
		}
	}
}

// TestBulkPeerLacksOne: a body the peer does not hold is a frame of its own; the others
// arrive in the same answer, and the lacking one stays missing (no other peer has it).
func TestBulkPeerLacksOne(t *testing.T) {
	c, ms := bulkSource(t, true, 5, 10_000)
	gone := ms[2]
	src := c.nodes[0].store
	corrupt(t, src, gone.ID)
	if err := src.Verify(gone.ID); !errors.Is(err, mailstore.ErrCorrupt) {
		t.Fatalf("verify: %v", err)
	}
	c.start(1)
	rest := slices.Delete(slices.Clone(ms), 2, 3)
	testutil.Poll(t, "the other bodies on node 1", settle, c.verified(1, rest...))
	// The lacking body is asked for alone after the answer's commits: poll for it.
	testutil.Poll(t, "one bulk answer and the lacking body asked for alone", settle, func() error {
		if singles, bulks := c.nodes[0].fl.requests(); bulks != 1 || singles < 1 {
			return fmt.Errorf("%d single and %d bulk requests", singles, bulks)
		}
		return nil
	})
	missing, err := c.nodes[1].store.Missing()
	if err != nil || len(missing) != 1 || missing[0].ID != gone.ID {
		t.Fatalf("node 1 misses %v (%v), want only %s", missing, err, gone.ID)
	}
}

// TestBulkCorruptOnServer: a body that fails the serving node's check on the way out ends
// the answer; the serving node moves it aside (it lists it missing), and the asker gets
// the rest alone.
func TestBulkCorruptOnServer(t *testing.T) {
	c, ms := bulkSource(t, true, 5, 10_000)
	bad := ms[1]
	corrupt(t, c.nodes[0].store, bad.ID)
	c.start(1)
	rest := slices.Delete(slices.Clone(ms), 1, 2)
	testutil.Poll(t, "the other bodies on node 1", settle, c.verified(1, rest...))
	testutil.Poll(t, "node 0 moved its bad copy aside", settle, testutil.Cond(func() bool {
		missing, err := c.nodes[0].store.Missing()
		return err == nil && len(missing) == 1 && missing[0].ID == bad.ID
	}))
	if c.hasAll(1, []mailstore.Meta{bad}) {
		t.Fatal("node 1 holds a body no node has whole")
	}
}

// corrupt changes a few bytes of the body of id in st, keeping its size.
func corrupt(t *testing.T, st *mailstore.Store, id string) {
	t.Helper()
	f, err := os.OpenFile(st.BodyPath(id), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte("bitrot"), 100); err != nil {
		t.Fatal(err)
	}
}

func TestJobsOf(t *testing.T) {
	ids := make([]string, 70)
	for i := range ids {
		ids[i] = mailstore.MakeID(1, uint64(i+1))
	}
	c := newCluster(t, 1)
	r := c.nodes[0].repl
	if got := r.jobsOf(ids); len(got) != 70 || len(got[0]) != 1 {
		t.Fatalf("without bulk: %d jobs", len(got))
	}
	c.bulk.Store(true)
	got := r.jobsOf(ids)
	var sizes []int
	for _, j := range got {
		sizes = append(sizes, len(j))
	}
	if !slices.Equal(sizes, []int{32, 32, 6}) || !slices.Equal(slices.Concat(got...), ids) {
		t.Fatalf("with bulk: jobs of %v", sizes)
	}
	if len(r.jobsOf(nil)) != 0 {
		t.Fatal("jobs for no ID")
	}
}

// TestBulkKeepsConnection: a PathBodies answer is read to its end, so that its connection
// serves the next request (one not read to its end is closed: a new TLS handshake for
// every answer, on the daemon's mail channel).
func TestBulkKeepsConnection(t *testing.T) {
	c := newCluster(t, 2)
	src, dst, r := c.nodes[0].store, c.nodes[1].store, c.nodes[1].repl
	p := Peer{CID: c.nodes[0].cid, Addr: c.nodes[0].addr}
	for round := 0; round < 3; round++ {
		for k := 0; k < 4; k++ {
			c.accept(0, 5000+k)
		}
		evs, _, _, err := src.Feed(dst.FeedHeads(), 100)
		if err != nil {
			t.Fatal(err)
		}
		need, err := dst.ApplyEvents(evs)
		if err != nil || len(need) != 4 {
			t.Fatalf("round %d: need %v: %v", round, need, err)
		}
		var ws []*mailstore.BodyWriter
		for _, id := range need {
			w, _, err := dst.BeginBody(id)
			if err != nil {
				t.Fatal(err)
			}
			ws = append(ws, w)
		}
		// The answer's end (the last chunk's marker) comes only once the client has
		// read the last body, as it often does over TLS, where it is a record of its own.
		tail := make(chan struct{})
		c.nodes[0].fl.mu.Lock()
		c.nodes[0].fl.tail = tail
		c.nodes[0].fl.mu.Unlock()
		got := 0
		err = r.streamBodies(context.Background(), p, ws, func(w *mailstore.BodyWriter) {
			if err := w.Commit(); err != nil {
				t.Error(err)
			}
			if got++; got == len(ws) {
				close(tail)
			}
		}, func(w *mailstore.BodyWriter) {
			t.Errorf("peer lacks %s", w.Meta().ID)
			_ = w.Close()
		})
		if err != nil || got != 4 {
			t.Fatalf("round %d: %d bodies: %v", round, got, err)
		}
	}
	if n := c.nodes[0].accepts.Load(); n != 1 {
		t.Fatalf("3 answers took %d connections, want 1", n)
	}
}

// relayLacking is a 3-node cluster (bulk on, no replicator started) in which node 0
// took 10 messages and node 1 has their events, not their bodies: a relay that lacks
// them.
func relayLacking(t *testing.T) (*cluster, []mailstore.Meta) {
	t.Helper()
	c := newCluster(t, 3)
	c.bulk.Store(true)
	var ms []mailstore.Meta
	for k := 0; k < 10; k++ {
		ms = append(ms, c.accept(0, 8_000))
	}
	src, relay := c.nodes[0].store, c.nodes[1].store
	evs, _, _, err := src.Feed(relay.FeedHeads(), 100)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := relay.ApplyEvents(evs); err != nil {
		t.Fatal(err)
	}
	return c, ms
}

// TestBulkLackingFromOrigin: a peer that relays another origin's events before it holds
// their bodies answers "-" for them; the asker then asks the origin for all of them in
// one more bulk request, not each of them of the relay and then of the origin alone.
func TestBulkLackingFromOrigin(t *testing.T) {
	c, ms := relayLacking(t) // node 2 can learn the events from node 1 only:
	c.nodes[0].fl.mu.Lock()
	c.nodes[0].fl.noEvents = true
	c.nodes[0].fl.mu.Unlock()
	c.start(2)
	testutil.Poll(t, "every body on node 2", settle, c.verified(2, ms...))
	for i, want := range [][2]int{{0, 1}, {0, 1}} {
		if singles, bulks := c.nodes[i].fl.requests(); singles != want[0] || bulks != want[1] {
			t.Fatalf("node %d answered %d single and %d bulk requests, want %v", i, singles, bulks, want)
		}
	}
}

// TestSweepFetchesInBulk: bodies a node lacks without a peer loop to bring them (here its
// index got the events before its replicator started, as after a restore or a repair)
// are fetched by the sweeper from their origin, bulkChunk to a request with Config.Bulk.
func TestSweepFetchesInBulk(t *testing.T) {
	c, ms := bulkSource(t, true, 40, 3_000)
	evs, err := c.nodes[0].store.EventsSince(mailstore.Cursors{}, 1000)
	if err != nil {
		t.Fatal(err)
	}
	need, err := c.nodes[1].store.ApplyEvents(evs)
	if err != nil || len(need) != len(ms) {
		t.Fatalf("ApplyEvents: %d bodies needed, %v; want %d", len(need), err, len(ms))
	}
	c.start(1)
	testutil.Poll(t, "every body on node 1", settle, c.verified(1, ms...))
	// 40 bodies: a request of 32 and one of 8, none alone.
	if singles, bulks := c.nodes[0].fl.requests(); singles != 0 || bulks != 2 {
		t.Fatalf("%d single and %d bulk requests, want 0 and 2", singles, bulks)
	}
	testutil.Poll(t, "backlog 0", settle, testutil.Cond(func() bool { return c.backlogZero(1) }))

	// The sweep ended (every ID's outcome came back): the next one repairs a damaged body.
	b := c.nodes[1].store
	f, err := os.OpenFile(b.BodyPath(ms[5].ID), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = f.WriteAt([]byte("bitrot"), 100)
	_ = f.Close()
	if err := b.Verify(ms[5].ID); !errors.Is(err, mailstore.ErrCorrupt) {
		t.Fatalf("verify: %v", err)
	}
	c.nodes[1].repl.Kick()
	testutil.Poll(t, "the damaged body repaired", settle, c.verified(1, ms[5]))
}

// TestBulkLackingOriginDown: as TestBulkLackingFromOrigin, with the origin down (its
// server closed: connections refused). The bodies the relay lacks stay missing without
// a hang or a loss of the events, and come once the origin is back on its address.
func TestBulkLackingOriginDown(t *testing.T) {
	c, ms := relayLacking(t)
	origin := c.nodes[0]
	_ = origin.srv.Close()
	c.start(2)
	testutil.Poll(t, "node 2 knows every message, lacks every body, asked the relay", settle, func() error {
		n, _ := c.nodes[2].store.Stats()
		missing, _ := c.nodes[2].store.Missing()
		_, bulks := c.nodes[1].fl.requests()
		if n != int64(len(ms)) || len(missing) != len(ms) || bulks < 1 {
			return fmt.Errorf("%d messages, %d bodies missing, %d bulk requests to the relay", n, len(missing), bulks)
		}
		return nil
	})
	ln, err := net.Listen("tcp", origin.addr)
	if err != nil {
		t.Fatalf("the origin's address again: %v", err)
	}
	srv := &http.Server{Handler: origin.fl.wrap(origin.cut.wrap(Handler(origin.store))), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	// Only the origin has them: the workers' retries or the sweeper get them there.
	testutil.Poll(t, "every body on node 2 from the origin back up", settle, c.verified(2, ms...))
	testutil.Poll(t, "backlog 0", settle, testutil.Cond(func() bool { return c.backlogZero(2) }))
}
