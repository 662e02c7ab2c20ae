package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/cluster"
	"github.com/pmgcm/pmgcm/fsm"
	"github.com/pmgcm/pmgcm/raftnode"
)

// TestUnknownOutcomeOnTheWire: a request the master took but did not answer is answered
// with code unknown_outcome and a hint on what to check, here and when another node
// said so (passed on unchanged); forwardAdmit recognizes both.
func TestUnknownOutcomeOnTheWire(t *testing.T) {
	local := fmt.Errorf("%w: the master at 10.0.0.1:8006 took the request but did not answer", raftnode.ErrUnknownOutcome)
	rec := httptest.NewRecorder()
	writeErr(rec, local)
	var e api.Error
	if err := json.NewDecoder(rec.Body).Decode(&e); err != nil {
		t.Fatal(err)
	}
	if rec.Code != http.StatusServiceUnavailable || e.Code != api.CodeUnknownOutcome || !strings.Contains(e.Hint, "pmgcm status") {
		t.Fatalf("answered %d %+v", rec.Code, e)
	}
	remote := &cluster.RemoteError{Status: rec.Code, E: e}
	rec = httptest.NewRecorder()
	writeErr(rec, remote)
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), api.CodeUnknownOutcome) {
		t.Fatalf("a remote unknown outcome was passed on as %d %s", rec.Code, rec.Body)
	}
	for _, err := range []error{local, remote, fmt.Errorf("admit: %w", remote)} {
		if !cluster.UnknownOutcome(err) {
			t.Errorf("unknownOutcome(%v) = false", err)
		}
	}
	for _, err := range []error{nil, raftnode.ErrNoLeader, &cluster.RemoteError{E: api.Error{Code: api.CodeMemberExists}}} {
		if cluster.UnknownOutcome(err) {
			t.Errorf("unknownOutcome(%v) = true", err)
		}
	}
}

// TestAbandonedRequestIsNotProposed: a request whose caller has gone (a forwarding node
// that saw another master elected) is refused before it reaches Raft.
func TestAbandonedRequestIsNotProposed(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	d := &Daemon{} // no Raft: reaching it would panic
	res, err := d.applyLocal(ctx, &fsm.ConfigSet{Key: "k", Value: []byte("v")})
	if res != nil || !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "abandoned") {
		t.Fatalf("applyLocal with a cancelled request: %v, %v", res, err)
	}
}

// TestFirstProposal: only "not proposed" errors let an operation go to the new master.
func TestFirstProposal(t *testing.T) {
	for _, err := range []error{raftnode.ErrNotLeader, raftnode.ErrNoLeader, fmt.Errorf("apply: %w", raftnode.ErrNotLeader)} {
		if !errors.Is(cluster.FirstProposal(err), cluster.ErrLostMaster) {
			t.Errorf("firstProposal(%v) is not errLostMaster", err)
		}
	}
	for _, err := range []error{nil, raftnode.ErrUnknownOutcome, raftnode.ErrTimeout, fsm.ErrMemberExists} {
		if errors.Is(cluster.FirstProposal(err), cluster.ErrLostMaster) {
			t.Errorf("firstProposal(%v) lets the operation be sent again", err)
		}
	}
}
