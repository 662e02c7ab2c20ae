package daemon

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pmgcm/pmgcm/fsm"
	"github.com/pmgcm/pmgcm/raftnode"
)

// forcedDaemon is a leaderDaemon (cid 1, the only Raft voter; the other members are in
// the state machine only, unreachable) with what a forced recovery uses: a data
// directory holding node.json, the peer cache, the status reporter, the promoter and
// the delete, all logging to logger.
func forcedDaemon(t *testing.T, logger hclog.Logger, members ...fsm.Member) *Daemon {
	t.Helper()
	rt := roundTrip(func(*http.Request) (*http.Response, error) { return nil, errors.New("no peer answers in this test") })
	d := leaderDaemon(t, rt, members...)
	d.logger = logger
	d.dir = &dataDir{path: t.TempDir()}
	if err := d.setSelf(nodeFile{CID: 1, Name: "pmg1", IP: "127.0.0.1", Port: 8006}); err != nil {
		t.Fatal(err)
	}
	d.trust = newPeerTrust(d)
	d.stat = newStatusReporter(d)
	d.tokens = newTokenKeeper(d)
	d.promoter = newPromoter(d)
	d.memberOps = newMemberOps(d)
	return d
}

// TestForcedPromotionTurnGivesUp: a forced promotion whose second membership turn (to
// commit the new epoch, after Raft's recovery) is held by another change past its
// deadline fails with an error that names the epoch and says a restart finishes it, and
// not ErrBusy's "nothing was changed: try again" (this node is the only voter by then);
// the pending epoch stays in node.json, and the restart's finishPendingEpoch commits it.
func TestForcedPromotionTurnGivesUp(t *testing.T) {
	d := forcedDaemon(t, hclog.NewNullLogger(), testMember(1, fsm.Voter), testMember(2, fsm.Voter))
	p := d.promoter
	heldc := make(chan func(), 1) // the release of the turn taken during the recovery
	var taken bool                // p.raft is called by forceRecover's goroutine only
	p.raft = func() *raftnode.Node {
		// forceRecover records the pending epoch, ends its first turn, then recovers
		// Raft (p.raft().ForceRecover): another membership change takes the turn right
		// then and keeps it past the promotion's deadline.
		if !taken && d.self().PendingEpoch != 0 {
			taken = true
			tctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if release, err := d.memberTurn.take(tctx); err != nil {
				t.Errorf("take the turn during the recovery: %v", err)
			} else {
				heldc <- release
			}
		}
		return d.rn()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	type answer struct {
		fenced []uint64
		epoch  uint64
		err    error
	}
	answered := make(chan answer, 1)
	go func() {
		fenced, epoch, err := p.forceRecover(ctx, 0)
		answered <- answer{fenced, epoch, err}
	}()
	var a answer
	select {
	case a = <-answered:
	case <-time.After(15 * time.Second):
		select {
		case held := <-heldc:
			held()
		default:
		}
		t.Fatal("the forced promotion waited for the turn long past its deadline")
	}
	var held func()
	select {
	case held = <-heldc:
	default:
		t.Fatalf("the turn was not taken during the recovery (forceRecover answered %v, %d, %v)", a.fenced, a.epoch, a.err)
	}
	err := a.err
	if err == nil {
		held()
		t.Fatalf("forced promotion with the turn held past its deadline succeeded: epoch %d, fenced %v", a.epoch, a.fenced)
	}
	msg := err.Error()
	if !strings.Contains(msg, "forced promotion to epoch 2: ") || !strings.HasSuffix(msg, "; it is finished when pmgclusterd restarts") {
		t.Errorf("error %q does not name epoch 2 and say that a restart finishes it", msg)
	}
	if !errors.Is(err, ErrPromotionPending) {
		t.Errorf("error %v is not ErrPromotionPending", err)
	}
	rec := httptest.NewRecorder()
	writeErr(rec, err)
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "restart pmgclusterd") {
		t.Errorf("control socket answer %d %s, want 503 with the hint to restart pmgclusterd", rec.Code, rec.Body.String())
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v does not wrap the deadline", err)
	}
	if errors.Is(err, ErrBusy) || strings.Contains(msg, "nothing was changed") {
		t.Errorf("error %v says nothing was changed (ErrBusy): this node is the only voter by now", err)
	}
	if cl := d.fsm.Cluster(); cl.Epoch != 1 {
		t.Fatalf("epoch %d committed with the turn held, want 1 still", cl.Epoch)
	}
	if pe := d.self().PendingEpoch; pe != 2 {
		t.Fatalf("pending epoch %d after the failed commit, want 2", pe)
	}
	nf, ok, err := d.dir.readNodeFile()
	if err != nil || !ok || nf.PendingEpoch != 2 {
		t.Fatalf("node.json after the failed commit: pending epoch %d (%v, %v), want 2: a restart would not finish it", nf.PendingEpoch, ok, err)
	}

	// The restart: node.json read again, then finishPendingEpoch, which waits for the
	// turn (the other change ends its own) and commits the epoch.
	d.node.Store(&nf)
	held()
	d.bg.Add(1)
	p.finishPendingEpoch()
	if cl := d.fsm.Cluster(); cl.Epoch != 2 {
		t.Fatalf("epoch %d after finishPendingEpoch, want 2", cl.Epoch)
	}
	if pe := d.self().PendingEpoch; pe != 0 {
		t.Fatalf("pending epoch %d after finishPendingEpoch, want 0", pe)
	}
	if m, ok := d.fsm.Member(2); !ok || !m.Fenced(2) {
		t.Fatalf("cid 2 after the new epoch: %+v (%v), want fenced", m, ok)
	}
}
