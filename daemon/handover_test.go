package daemon

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/pmgcm/pmgcm/fsm"
	"github.com/pmgcm/pmgcm/internal/testutil"
)

// TestHaltedMasterHandsOver: the master whose state machine halts (a log entry this
// build cannot apply) hands mastership over at once, not at the duty's next turn, and a
// halted node that becomes master again hands over at the start of that term.
func TestHaltedMasterHandsOver(t *testing.T) {
	rt := roundTrip(func(*http.Request) (*http.Response, error) { return nil, errors.New("no peers in this test") })
	d := leaderDaemon(t, rt, testMember(1, fsm.Voter))
	d.tools.loaded = true // in service: no maintenance file
	d.versions = newVersionKeeper(d)
	d.versions.watchHalt()
	var handovers atomic.Int32
	handOver := func(context.Context) (uint64, error) {
		handovers.Add(1)
		return 2, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.handoverDuty(ctx, handOver)
	}()
	// The master meets an entry it cannot apply.
	res := d.fsm.Apply(&raft.Log{Type: raft.LogCommand, Index: d.fsm.AppliedIndex() + 1,
		Data: []byte{fsm.EncodingVersion, 200, '{', '}'}}).(*fsm.Result)
	if !errors.Is(res.Err, fsm.ErrHalted) {
		t.Fatalf("test setup: the state machine did not halt: %v", res.Err)
	}
	start := time.Now()
	testutil.Poll(t, "the halted master's handover", handoverEvery/2, func() error {
		if handovers.Load() == 0 {
			return errors.New("no handover yet")
		}
		return nil
	})
	t.Logf("handed over %s after the halt", time.Since(start))
	cancel()
	<-done

	// A new term of the halted node: it hands over at its start.
	before := handovers.Load()
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	go d.handoverDuty(ctx2, handOver)
	testutil.Poll(t, "the handover at the start of a halted term", handoverEvery/2, func() error {
		if handovers.Load() == before {
			return errors.New("no handover yet")
		}
		return nil
	})
}
