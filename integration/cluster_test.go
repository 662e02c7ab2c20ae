package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/internal/testutil"
	"github.com/pmgcm/pmgcm/membership"
)

// joinArgs returns the arguments of the join command that join-cmd prints on n, as
// ["join", master, "--fingerprint", FP, "--token", TOKEN].
func joinArgs(t testing.TB, n *Node) []string {
	t.Helper()
	return parseJoinLine(t, n.CLI("join-cmd"))
}

// parseJoinLine parses join-cmd's last line: "PMGCM_JOIN_TOKEN=<TOKEN> pmgcm join
// <master> --fingerprint <FP>", or the first release's "pmgcm join <master>
// --fingerprint <FP> --token <TOKEN>", into join arguments with --token last.
func parseJoinLine(t testing.TB, out string) []string {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	line := lines[len(lines)-1]
	fields := strings.Fields(line)
	switch {
	case len(fields) == 6 && strings.HasPrefix(fields[0], "PMGCM_JOIN_TOKEN=") && fields[1] == "pmgcm" &&
		fields[2] == "join" && fields[4] == "--fingerprint":
		return []string{"join", fields[3], "--fingerprint", fields[5], "--token", strings.TrimPrefix(fields[0], "PMGCM_JOIN_TOKEN=")}
	case len(fields) == 7 && fields[0] == "pmgcm" && fields[1] == "join" && fields[3] == "--fingerprint" && fields[5] == "--token":
		return fields[1:]
	}
	t.Fatalf("join-cmd printed %q, want: PMGCM_JOIN_TOKEN=<TOKEN> pmgcm join <master> --fingerprint <FP>", line)
	return nil
}

// form starts every node, creates the cluster on the first and joins the others to it
// with the command join-cmd prints, one after the other, and waits until every node
// sees every other in state A.
func (c *Cluster) form() {
	c.t.Helper()
	for _, n := range c.Nodes {
		n.Start()
	}
	first := c.Nodes[0]
	first.CLI("create")
	first.WaitMaster(15 * time.Second)
	args := append(joinArgs(c.t, first), "--yes")
	for _, n := range c.Nodes[1:] {
		n.CLI(args...)
	}
	c.waitAllActive(c.Nodes, 30*time.Second)
	// State A does not wait for the voter policy: a node that just joined may still be a
	// non-voter, and a test that then stops a voter would take the master's quorum.
	waitMembersVoters(c.t, first, len(c.Nodes), membership.WantVoters(len(c.Nodes)), 30*time.Second)
}

// waitAllActive waits until each of nodes reports exactly those nodes, all in state A,
// with one master.
func (c *Cluster) waitAllActive(nodes []*Node, timeout time.Duration) {
	c.t.Helper()
	want := map[string]bool{}
	for _, n := range nodes {
		want[n.IP] = true
	}
	for _, n := range nodes {
		testutil.Poll(c.t, n.Name+" sees every node active", timeout, func() error {
			st, err := n.Status()
			if err != nil {
				return err
			}
			return checkAllActive(st, want)
		})
	}
}

func checkAllActive(st api.Status, want map[string]bool) error {
	if st.Cluster == nil {
		return fmt.Errorf("no cluster")
	}
	if len(st.Nodes) != len(want) {
		return fmt.Errorf("%d nodes listed, want %d", len(st.Nodes), len(want))
	}
	masters := 0
	for _, r := range st.Nodes {
		if !want[r.IP] {
			return fmt.Errorf("unexpected node %s(%d) %s", r.Name, r.CID, r.IP)
		}
		if r.State != api.StateActive {
			return fmt.Errorf("%s(%d) state %s %s", r.Name, r.CID, r.State, r.Error)
		}
		if r.Role == api.RoleMaster {
			masters++
		}
	}
	if masters != 1 {
		return fmt.Errorf("%d masters", masters)
	}
	return nil
}

// voters counts the voters in st.
func voters(st api.Status) int {
	v := 0
	for _, r := range st.Nodes {
		if r.Suffrage == "voter" {
			v++
		}
	}
	return v
}

// master returns the node that is master, by the first node's status.
func (c *Cluster) master() *Node {
	c.t.Helper()
	var m *Node
	testutil.Poll(c.t, "a master", 15*time.Second, func() error {
		for _, n := range c.Nodes {
			if n.Exited() {
				continue
			}
			st, err := n.Status()
			if err != nil {
				continue
			}
			for _, r := range st.Nodes {
				if r.Local && r.Role == api.RoleMaster {
					m = n
					return nil
				}
			}
		}
		return fmt.Errorf("no node is master")
	})
	return m
}

// roles returns the master (by the nodes' status) and the other nodes, in order.
func (c *Cluster) roles() (master *Node, followers []*Node) {
	c.t.Helper()
	master = c.master()
	return master, others(c.Nodes, master)
}

// others returns nodes without except.
func others(nodes []*Node, except *Node) []*Node {
	var out []*Node
	for _, n := range nodes {
		if n != except {
			out = append(out, n)
		}
	}
	return out
}
