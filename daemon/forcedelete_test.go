package daemon

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/fsm"
)

// TestForceDeleteTokenTurnGivesUp: a forced delete whose join-token rotation cannot take
// the membership turn before the deadline (another change took it as the recovery
// ended) still deletes the member, answers TokenRotated false (pmgcm delete then tells
// the operator to run pmgcm join-cmd --rotate) and logs that warning; the token is
// indeed the old one.
func TestForceDeleteTokenTurnGivesUp(t *testing.T) {
	// The turn is taken by the log line forceDelete writes between the recovery's turn
	// and the rotation's.
	g := &turnGrabber{at: "node deleted by forced recovery"}
	logger := hclog.New(&hclog.LoggerOptions{Output: g, Level: hclog.Info})
	d := forcedDaemon(t, logger, testMember(1, fsm.Voter), testMember(2, fsm.Voter))
	g.setTurn(&d.memberTurn)
	before := *d.fsm.Cluster()
	two, _ := d.fsm.Member(2)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	type answer struct {
		resp *api.DeleteResponse
		err  error
	}
	answered := make(chan answer, 1)
	go func() {
		resp, err := d.memberOps.forceDelete(ctx, two)
		answered <- answer{resp, err}
	}()
	var resp *api.DeleteResponse
	var err error
	select {
	case a := <-answered:
		resp, err = a.resp, a.err
	case <-time.After(15 * time.Second):
		g.release()
		t.Fatal("the forced delete waited for the turn long past its deadline")
	}
	if !g.took() {
		t.Fatalf("the turn was not taken after the recovery (forceDelete answered %+v, %v); log:\n%s", resp, err, g.log())
	}
	if err != nil {
		t.Fatalf("forced delete whose token rotation could not take the turn: %v, want the delete done", err)
	}
	if resp.CID != 2 || resp.TokenRotated {
		t.Fatalf("forced delete answered %+v, want cid 2 with TokenRotated false", resp)
	}
	if _, ok := d.fsm.Member(2); ok {
		t.Fatal("cid 2 is still a member after its forced delete")
	}
	cl := d.fsm.Cluster()
	if cl.Epoch != before.Epoch+1 {
		t.Fatalf("epoch %d after the forced delete, want %d", cl.Epoch, before.Epoch+1)
	}
	if !bytes.Equal(cl.JoinTokenHash, before.JoinTokenHash) || !bytes.Equal(cl.JoinTokenSalt, before.JoinTokenSalt) {
		t.Fatal("the join token changed although the delete answered TokenRotated false")
	}
	if log := g.log(); !strings.Contains(log, "join token not rotated after a delete: run pmgcm join-cmd --rotate") {
		t.Fatalf("no warning to rotate the token by hand in the log:\n%s", log)
	}

	// With the turn free, the same rotation changes the token: the check above can see one.
	g.release()
	if !d.tokens.rotateAfterDelete(context.Background(), 2) {
		t.Fatal("the rotation with the turn free failed")
	}
	if cl := d.fsm.Cluster(); bytes.Equal(cl.JoinTokenHash, before.JoinTokenHash) {
		t.Fatal("a rotation left the token hash as it was")
	}
}

// turnGrabber is a log output that takes the membership turn, if it is free, when a
// line containing at is written, and keeps every line.
type turnGrabber struct {
	at string

	mu   sync.Mutex
	turn *memberTurn
	buf  bytes.Buffer
	held func()
}

func (g *turnGrabber) setTurn(turn *memberTurn) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.turn = turn
}

func (g *turnGrabber) Write(b []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.turn != nil && g.held == nil && bytes.Contains(b, []byte(g.at)) {
		done, cancel := context.WithCancel(context.Background())
		cancel() // takes only a free turn: never waits inside the logger
		if release, err := g.turn.take(done); err == nil {
			g.held = release
		}
	}
	return g.buf.Write(b)
}

func (g *turnGrabber) took() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.held != nil
}

func (g *turnGrabber) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.held != nil {
		g.held()
	}
}

func (g *turnGrabber) log() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.buf.String()
}
