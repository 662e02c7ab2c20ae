package integration

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/api"
)

// TestFiveNodeClusterVoters forms a 5-node cluster with join-cmd's output, one node at a
// time, checking the voter policy after each join (1, 2, 3, 3, 5 voters for 1..5 nodes),
// that every node's status agrees, and then the voter count after each delete (3, 3, 2
// voters for 4, 3, 2 nodes).
func TestFiveNodeClusterVoters(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 5)
	logNotable(t, c)
	for _, n := range c.Nodes {
		n.Start()
	}
	first := c.Nodes[0]
	first.CLI("create")
	first.WaitMaster(15 * time.Second)
	waitMembersVoters(t, first, 1, 1, 15*time.Second)

	wantVoters := []int{1, 2, 3, 3, 5}
	args := append(joinArgsRetry(t, first), "--yes")
	cids := map[uint64]string{1: first.Name}
	for i, n := range c.Nodes[1:] {
		out := cliRetry(t, n, args...)
		_, cid, _ := parseJoined(t, out)
		if prev, dup := cids[cid]; dup {
			t.Fatalf("%s joined as cid %d, which %s already has", n.Name, cid, prev)
		}
		cids[cid] = n.Name
		nodes := i + 2
		m := c.master()
		waitMembersVoters(t, m, nodes, wantVoters[nodes-1], 30*time.Second)
		// Once every node is active the count must hold (no late promotion), in the
		// member list and in each node's own Raft configuration.
		c.waitAllActive(c.Nodes[:nodes], 30*time.Second)
		checkVoters(t, m, c.Nodes[:nodes], wantVoters[nodes-1])
	}
	c.waitAllActive(c.Nodes, 30*time.Second)
	waitAgree(t, c.Nodes, 30*time.Second)
	for _, n := range c.Nodes {
		st := mustStatus(t, n)
		if got := voters(st); got != 5 {
			t.Fatalf("%s sees %d voters, want 5: %s", n.Name, got, suffrages(st))
		}
		for _, r := range st.Nodes {
			if cids[r.CID] != r.Name {
				t.Fatalf("%s lists %s(%d), but that CID was given to %q", n.Name, r.Name, r.CID, cids[r.CID])
			}
		}
	}

	// A write on one node is read on all five.
	cliRetry(t, c.Nodes[3], "config", "set", "five/key", "five value")
	for _, n := range c.Nodes {
		if got := cliRetry(t, n, "config", "get", "five/key"); got != "five value" {
			t.Fatalf("%s reads %q", n.Name, got)
		}
	}

	// Delete down to two nodes, as the manual says: shut the node down, then delete it.
	// Voters are preferred as victims, so that a voter must be replaced each time.
	live := append([]*Node(nil), c.Nodes...)
	for _, want := range []struct{ nodes, voters int }{{4, 3}, {3, 3}, {2, 2}} {
		m := c.master()
		st := mustStatus(t, m)
		var victim *Node
		var victimCID uint64
		for _, voterOnly := range []bool{true, false} {
			for _, r := range st.Nodes {
				// Never the node the delete runs on, even if its mastership moved meanwhile.
				if victim != nil || r.Role == api.RoleMaster || r.IP == m.IP || (voterOnly && r.Suffrage != "voter") {
					continue
				}
				for _, n := range live {
					if n.IP == r.IP {
						victim, victimCID = n, r.CID
					}
				}
			}
		}
		if victim == nil {
			t.Fatalf("no node to delete in %s", suffrages(st))
		}
		victim.Kill()
		for i, n := range live {
			if n == victim {
				live = append(live[:i], live[i+1:]...)
				break
			}
		}
		out := cliRetry(t, m, "delete", strconv.FormatUint(victimCID, 10))
		mustContain(t, "delete output", out, fmt.Sprintf("deleted cid %d (%s, %s)", victimCID, victim.Name, victim.IP))
		waitMembersVoters(t, m, want.nodes, want.voters, 30*time.Second)
		c.waitAllActive(live, 30*time.Second)
		waitAgree(t, live, 30*time.Second)
		checkVoters(t, m, live, want.voters)
	}
}

// checkVoters checks that every one of nodes sees want voters in status, and waits until
// want of them are voters by their own Raft configuration.
func checkVoters(t *testing.T, m *Node, nodes []*Node, want int) {
	t.Helper()
	for _, n := range nodes {
		st := mustStatus(t, n)
		if got := voters(st); got != want || len(st.Nodes) != len(nodes) {
			t.Fatalf("%s sees %d nodes with %d voters, want %d with %d: %s", n.Name, len(st.Nodes), got, len(nodes), want, suffrages(st))
		}
	}
	waitRaftVoters(t, m, nodes, want, 15*time.Second)
}
