package integration

import (
	"errors"
	"math"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/internal/testutil"
)

// TestMailJoinJoinerKilled: the joining node itself is killed with kill -9 while bodies
// are in transfer (received bodies committed under spooled names, their directories not
// yet synced, others half written), and started again, three times; each restart must
// keep every body it had (its backlog does not grow back) and it then ends with every
// message and every body whole, never in state A while it lacks one.
func TestMailJoinJoinerKilled(t *testing.T) {
	t.Parallel()
	skipShort(t)
	mc, _, n2, want := joinWithMail(t, "joinerkill")
	kills := 0
	below := int64(math.MaxInt64)
	for kills < 3 && midTransfer(t, n2, len(want), below, 120*time.Second) {
		_, ms, _ := joinerMail(n2)
		t.Logf("kill -9 of %s (the joining node) lacking %d bodies (%d bytes)", n2.Name, ms.BacklogMessages, ms.BacklogBytes)
		n2.Kill()
		n2.Start()
		// What it held before the kill is still held: once its backlog is known
		// again, it lacks no more than before.
		var after api.MailStatus
		testutil.Poll(t, n2.Name+" knows its backlog again", 60*time.Second, func() error {
			var err error
			if _, after, err = joinerMail(n2); err != nil {
				return err
			}
			if !after.BacklogKnown {
				return errors.New("backlog not known yet")
			}
			return nil
		})
		// A message counts once in the backlog, as an event not applied or as a body
		// missing, so the count only shrinks while no mail comes in (a status read a
		// moment ago shows it higher, never lower); bytes do not: they grow as events
		// are applied.
		if after.BacklogMessages > ms.BacklogMessages {
			t.Errorf("after its restart %s lacks %d messages, before the kill %d: bodies it held were lost",
				n2.Name, after.BacklogMessages, ms.BacklogMessages)
		}
		below = ms.BacklogBytes
		kills++
	}
	if kills == 0 {
		t.Fatal("node2 had every body before it could be killed: the drill did not exercise a transfer")
	}
	watchCatchUp(t, n2, want, 120*time.Second)
	mc.waitAllActive(mc.Nodes, 60*time.Second)
	waitMail(t, mc.Nodes, want, 60*time.Second)
	checkVerified(t, n2)
}
