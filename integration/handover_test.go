package integration

import (
	"strings"
	"testing"
	"time"
)

// electionStart is what raft logs when a follower stops waiting for its master.
const electionStart = "heartbeat timeout reached, starting election"

// TestStopMasterHandsOver: SIGTERM on the master of a 3-node cluster hands mastership to
// another voter before Raft stops (DESIGN rule 8): a survivor is master soon after, and
// no survivor waited out its heartbeat timeout for an election.
func TestStopMasterHandsOver(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3)
	c.form()
	old, survivors := c.roles()
	old.CLI("config", "set", "before", "1")
	before := map[string]int{}
	for _, n := range survivors {
		before[n.Name] = strings.Count(n.Log(), electionStart)
	}
	start := time.Now()
	old.Stop()
	stopped := time.Since(start)
	next := drillWaitMaster(t, survivors, 10*time.Second)
	t.Logf("%s stopped after %s; %s master %s after SIGTERM", old.Name, stopped.Round(time.Millisecond), next.Name, time.Since(start).Round(time.Millisecond))
	if !strings.Contains(old.Log(), "handed leadership over before stopping") {
		t.Fatalf("%s did not hand leadership over:\n%s", old.Name, tail([]byte(old.Log()), 40))
	}
	for _, n := range survivors {
		if got := strings.Count(n.Log(), electionStart); got != before[n.Name] {
			t.Fatalf("%s waited out its heartbeat timeout for an election after the master stopped:\n%s", n.Name, tail([]byte(n.Log()), 40))
		}
	}
	next.CLI("config", "set", "after", "2")
}
