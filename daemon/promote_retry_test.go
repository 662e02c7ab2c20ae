package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/cluster"
	"github.com/pmgcm/pmgcm/internal/testutil"
	"github.com/pmgcm/pmgcm/raftnode"
)

// masterAnswer is what the cluster RPC client returns when the master answers err: the
// master writes it with writeErr (cluster.Service does), the client decodes it.
func masterAnswer(t *testing.T, err error) error {
	t.Helper()
	rec := httptest.NewRecorder()
	writeErr(rec, err)
	var e api.Error
	if err := json.NewDecoder(rec.Body).Decode(&e); err != nil {
		t.Fatal(err)
	}
	return &cluster.RemoteError{Status: rec.Code, E: e}
}

// TestPromoteRetriesFailedTransfer: pmgcm promote on a follower asks the master for a
// leadership transfer again after one that did not complete (raftnode.ErrTransferFailed,
// answered "unavailable"): a transient failure is retried within the search deadline
// and the promotion succeeds; a persistent one ends, within the search deadline, with
// the master's "unavailable: run pmgcm promote again" answer, having changed nothing.
func TestPromoteRetriesFailedTransfer(t *testing.T) {
	rt := roundTrip(func(*http.Request) (*http.Response, error) { return nil, errors.New("no peer RPCs in this test") })
	d, n2, two := twoVoters(t, rt)
	d.tools.loaded = true // in service: no maintenance file
	d.node.Store(&nodeFile{CID: 1, Name: "pmg1", IP: "127.0.0.1", Port: 8006})
	d.stat = newStatusReporter(d)
	d.maint = newMaintenance(d)
	d.promoter = newPromoter(d)
	cfg, err := d.rn().Configuration()
	if err != nil {
		t.Fatal(err)
	}
	var addr1 string
	for _, s := range cfg.Servers {
		if s.ID == "1" {
			addr1 = string(s.Address)
		}
	}
	// cid 2 becomes master; cid 1, a follower, is the one promoted below.
	if err := d.rn().TransferLeadership(2, memberAddr(two)); err != nil {
		t.Fatal(err)
	}
	testutil.Poll(t, "cid 1 following cid 2", 10*time.Second, func() error {
		if addr, err := d.writes.leaderAddr(); err != nil || addr != memberAddr(two) || !n2.IsLeader() {
			return fmt.Errorf("leader %q (%v)", addr, err)
		}
		return nil
	})
	failed := func() error {
		return masterAnswer(t, fmt.Errorf("leadership transfer to cid 1: %w: leadership transfer timeout", raftnode.ErrTransferFailed))
	}
	var calls atomic.Int32
	asked := func(addr string, cid uint64) error {
		calls.Add(1)
		if addr != memberAddr(two) || cid != 1 {
			return fmt.Errorf("asked %s to transfer to cid %d, want the master %s and cid 1", addr, cid, memberAddr(two))
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// Persistent: every transfer fails.
	d.promoter.transfer = func(_ context.Context, addr string, cid uint64) error {
		if err := asked(addr, cid); err != nil {
			return err
		}
		return failed()
	}
	start := time.Now()
	_, err = d.promoter.promote(ctx, false)
	took := time.Since(start)
	if err == nil {
		t.Fatal("a promotion whose every transfer failed succeeded")
	}
	rec := httptest.NewRecorder()
	writeErr(rec, err) // as the control socket answers pmgcm promote
	var e api.Error
	if err := json.NewDecoder(rec.Body).Decode(&e); err != nil {
		t.Fatal(err)
	}
	if e.Code != api.CodeUnavailable || !strings.Contains(e.Hint, "run pmgcm promote again") {
		t.Fatalf("persistent transfer failure answered %+v, want code %q with the hint to run pmgcm promote again", e, api.CodeUnavailable)
	}
	if n := calls.Load(); n < 2 {
		t.Fatalf("the failed transfer was asked %d time(s), not again", n)
	}
	if took > promoteSearchTimeout {
		t.Fatalf("the promotion gave up after %s, past the search deadline %s", took, promoteSearchTimeout)
	}
	if d.rn().IsLeader() || !n2.IsLeader() {
		t.Fatal("the failed promotion moved leadership")
	}
	t.Logf("persistent failure: %d attempts, %s", calls.Load(), took.Round(time.Millisecond))

	// Transient: the first transfer fails, the next one goes through.
	calls.Store(0)
	d.promoter.transfer = func(_ context.Context, addr string, cid uint64) error {
		if err := asked(addr, cid); err != nil {
			return err
		}
		if calls.Load() == 1 {
			return failed()
		}
		return n2.TransferLeadership(1, addr1) // what the master does
	}
	start = time.Now()
	resp, err := d.promoter.promote(ctx, false)
	took = time.Since(start)
	if err != nil {
		t.Fatalf("a promotion whose first transfer failed once: %v", err)
	}
	if resp.CID != 1 || resp.AlreadyMaster || resp.Forced {
		t.Fatalf("promotion answered %+v, want cid 1 promoted by transfer", resp)
	}
	if n := calls.Load(); n != 2 {
		t.Fatalf("the transfer was asked %d times, want 2 (one failure, one retry)", n)
	}
	if took > promoteSearchTimeout {
		t.Fatalf("the retried transfer took %s, past the search deadline %s", took, promoteSearchTimeout)
	}
	if !d.rn().IsLeader() {
		t.Fatal("cid 1 does not lead after its promotion")
	}
}
