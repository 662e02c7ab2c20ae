package integration

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// Crash drills of the Raft log store (issue 16): a write is acknowledged only once it is
// in the Raft log on disk (raft.db, synced), so kill -9 at any moment loses none.

// crashRounds is how many kill -9 rounds TestKillDuringWritesLosesNoAck runs.
const crashRounds = 20

// TestKillDuringWritesLosesNoAck: a one-node cluster takes writes from 3 concurrent
// writers (so appends are batched) and is killed with SIGKILL at a random moment, round
// after round; after each restart every write acknowledged so far is there with its
// value. With one node no other copy can hide a lost entry: the node's own log is
// all there is.
func TestKillDuringWritesLosesNoAck(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 1)
	n := c.Nodes[0]
	n.Start()
	n.CLI("create")
	rng := rand.New(rand.NewPCG(16, 16))
	acked := map[string]string{}
	for round := 0; round < crashRounds; round++ {
		var ws []*drillWriter
		for i := 0; i < 3; i++ {
			ws = append(ws, startDrillWriter(t, fmt.Sprintf("crash%d-%d", round, i), nil, func(*rand.Rand) *Node { return n }))
		}
		for _, w := range ws {
			w.waitAcks(t, 3, 20*time.Second)
		}
		// Kill in the middle of the stream, not at an ack boundary.
		killAfter := time.Duration(rng.IntN(300)) * time.Millisecond
		time.Sleep(killAfter) // not a wait for state: a random moment of the kill
		n.Kill()
		got := 0
		for _, w := range ws {
			m := w.stop()
			got += len(m)
			for k, v := range m {
				acked[k] = v
			}
		}
		n.Start()
		drillCheckKeys(t, n, acked)
		t.Logf("round %d: killed %s after the writers' first acks; %d writes acknowledged in the round, %d in all, none lost",
			round, killAfter, got, len(acked))
	}
}

// clusterCrashRounds is how many kill -9 rounds TestKillAnyNodeDuringWritesLosesNoAck runs.
const clusterCrashRounds = 10

// TestKillAnyNodeDuringWritesLosesNoAck: in a 3-node cluster, a random node (master or
// follower) is killed with SIGKILL while 2 writers stream through the other two, round
// after round; it restarts and catches up, and every write acknowledged so far is on
// every node.
func TestKillAnyNodeDuringWritesLosesNoAck(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3)
	c.form()
	rng := rand.New(rand.NewPCG(16, 3))
	acked := map[string]string{}
	for round := 0; round < clusterCrashRounds; round++ {
		victim := c.Nodes[rng.IntN(len(c.Nodes))]
		survivors := drillOthers(c.Nodes, victim)
		var ws []*drillWriter
		for i, s := range survivors {
			ws = append(ws, startDrillWriter(t, fmt.Sprintf("ccrash%d-%d", round, i), nil, func(*rand.Rand) *Node { return s }))
		}
		for _, w := range ws {
			w.waitAcks(t, 3, 20*time.Second)
		}
		time.Sleep(time.Duration(rng.IntN(200)) * time.Millisecond) // not a wait for state: a random moment of the kill
		victim.Kill()
		drillWaitMaster(t, survivors, 15*time.Second)
		for _, w := range ws {
			w.waitAcks(t, w.count()+2, 20*time.Second) // writes go on without the victim
		}
		got := 0
		for _, w := range ws {
			m := w.stop()
			got += len(m)
			for k, v := range m {
				acked[k] = v
			}
		}
		victim.Start()
		c.waitAllActive(c.Nodes, 30*time.Second)
		for _, n := range c.Nodes {
			drillCheckKeys(t, n, acked)
		}
		t.Logf("round %d: killed %s; %d writes acknowledged in the round, %d in all, on every node", round, victim.Name, got, len(acked))
	}
}
