package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/cluster"
	"github.com/pmgcm/pmgcm/fsm"
	"github.com/pmgcm/pmgcm/raftnode"
)

// TestDrainGate: once closed, the gate refuses new requests and waits for those in
// flight; a bound ends the wait with the count still in flight.
func TestDrainGate(t *testing.T) {
	var g drainGate
	for i := 0; i < 2; i++ {
		if !g.enter() {
			t.Fatal("an open gate refused")
		}
	}
	g.leave()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if n := g.closeAndWait(ctx); n != 1 {
		t.Fatalf("closeAndWait with one in flight and a bound: %d", n)
	}
	if g.enter() {
		t.Fatal("a closed gate admitted a request")
	}
	done := make(chan int, 1)
	go func() { done <- g.closeAndWait(context.Background()) }()
	g.leave()
	if n := <-done; n != 0 {
		t.Fatalf("closeAndWait once idle: %d", n)
	}
}

// TestRefuseWhileStopping: once the daemon stops, a write on the control socket is
// answered shutting_down (nothing started), a read still served.
func TestRefuseWhileStopping(t *testing.T) {
	d := &Daemon{stop: make(chan struct{})}
	served := 0
	h := d.refuseWhileStopping(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		served++
		w.WriteHeader(http.StatusOK)
	}))
	do := func(method string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(method, api.PathConfig+"?key=k", nil))
		return rec
	}
	if rec := do(http.MethodPut); rec.Code != http.StatusOK || served != 1 {
		t.Fatalf("a write before the stop: %d, served %d", rec.Code, served)
	}
	close(d.stop)
	rec := do(http.MethodPut)
	var e api.Error
	if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || rec.Code != http.StatusServiceUnavailable ||
		e.Code != api.CodeShuttingDown || e.Hint == "" || served != 1 {
		t.Fatalf("a write while stopping: %d %s (served %d)", rec.Code, rec.Body, served)
	}
	if rec := do(http.MethodGet); rec.Code != http.StatusOK || served != 2 {
		t.Fatalf("a read while stopping: %d, served %d", rec.Code, served)
	}
}

// TestForwardedApplyRefusedWhileStopping: once Close drains forwarded writes, a new one
// is answered ErrShuttingDown (api.CodeShuttingDown) before anything is proposed.
func TestForwardedApplyRefusedWhileStopping(t *testing.T) {
	d := &Daemon{stop: make(chan struct{})}
	d.forwarded.closeAndWait(context.Background())
	_, err := rpcHandler{d}.Apply(context.Background(), fsm.ConfigSet{Key: "k", Value: []byte("v")})
	if !errors.Is(err, cluster.ErrShuttingDown) {
		t.Fatalf("a forwarded write while stopping: %v", err)
	}
	rec := httptest.NewRecorder()
	writeErr(rec, err)
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), api.CodeShuttingDown) {
		t.Fatalf("answered %d %s", rec.Code, rec.Body)
	}
}

// TestForwardedApplyAfterRaftStopped: a forwarded write that meets a Raft node already
// stopped (Close's drain bound passed) is answered ErrShuttingDown: it was never
// appended, and the forwarder may send it to the next master.
func TestForwardedApplyAfterRaftStopped(t *testing.T) {
	d := newClosedRaftDaemon(t)
	close(d.stop)
	_, err := rpcHandler{d}.Apply(context.Background(), fsm.ConfigSet{Key: "k", Value: []byte("v")})
	if !errors.Is(err, cluster.ErrShuttingDown) {
		t.Fatalf("a forwarded write on a stopped Raft: %v", err)
	}
}

// newClosedRaftDaemon is a Daemon whose Raft node was made and closed, never opened.
func newClosedRaftDaemon(t *testing.T) *Daemon {
	t.Helper()
	f := fsm.New()
	d := &Daemon{fsm: f, stop: make(chan struct{})}
	rc := raftnode.DefaultConfig()
	rc.Dir, rc.LocalID, rc.Address = t.TempDir(), "1", "127.0.0.1:1"
	n, err := raftnode.New(rc, f, func() raft.StreamLayer { return nopLayer{} })
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	d.raftp.Store(n)
	return d
}
