package integration

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/internal/testutil"
	"github.com/pmgcm/pmgcm/internal/version"
)

// TestKillMasterDuringBatchedForwardsLosesNoAck: writes forwarded together from one
// follower go to the master in batches (cluster.PathApplyBatch, at cluster version 2); the
// master is killed with SIGKILL while 6 writers stream through that follower, round after
// round. The writes go on with the next master, and every write acknowledged so far is on
// every node once the old master is back.
func TestKillMasterDuringBatchedForwardsLosesNoAck(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3)
	c.form()
	testutil.Poll(t, "the cluster version", 30*time.Second, func() error {
		if st := statusOf(t, c.Nodes[0]); st.Cluster.Version != version.Level {
			return fmt.Errorf("cluster version %d, want %d (batched forwarding)", st.Cluster.Version, version.Level)
		}
		return nil
	})
	acked := map[string]string{}
	const rounds, writers = 4, 6
	for round := 0; round < rounds; round++ {
		m := c.master()
		via := drillOthers(c.Nodes, m)[0]
		var ws []*drillWriter
		for i := 0; i < writers; i++ {
			ws = append(ws, startDrillWriter(t, fmt.Sprintf("bcrash%d-%d", round, i), nil, func(_ *rand.Rand) *Node { return via }))
		}
		for _, w := range ws {
			w.waitAcks(t, 3, 30*time.Second)
		}
		m.Kill()
		drillWaitMaster(t, drillOthers(c.Nodes, m), 15*time.Second)
		for _, w := range ws {
			w.waitAcks(t, w.count()+2, 30*time.Second)
		}
		got := 0
		for _, w := range ws {
			for k, v := range w.stop() {
				acked[k] = v
				got++
			}
		}
		m.Start()
		c.waitAllActive(c.Nodes, 30*time.Second)
		for _, n := range c.Nodes {
			drillCheckKeys(t, n, acked)
		}
		t.Logf("round %d: killed master %s, writes via %s; %d acknowledged in the round, %d in all, on every node", round, m.Name, via.Name, got, len(acked))
	}
}
