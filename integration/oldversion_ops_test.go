package integration

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// newMixedCluster forms a 3-node cluster, created on node1, whose node3 runs the
// previous release (RELEASES), and waits until every node is active.
func newMixedCluster(t *testing.T) *Cluster {
	t.Helper()
	old := releaseBinaries(t, previousRelease(t))
	c := newCluster(t, 3)
	c.Nodes[2].setBinDir(old)
	for _, n := range c.Nodes {
		n.Start()
	}
	first := c.Nodes[0]
	first.CLI("create")
	first.WaitMaster(15 * time.Second)
	args := append(joinArgs(t, first), "--yes")
	for _, n := range c.Nodes[1:] {
		n.CLI(args...)
	}
	c.waitAllActive(c.Nodes, 30*time.Second)
	return c
}

// TestOpsWithFirstReleaseNode: in a cluster with a node of the previous release (RELEASES), status
// checks the clocks of the new nodes only (the old one reports none), and pmgcm report
// records the old node as "not available (older version)" and collects the others.
func TestOpsWithFirstReleaseNode(t *testing.T) {
	c := newMixedCluster(t)
	first := c.Nodes[0]

	st := mustStatus(t, first)
	for _, r := range st.Nodes {
		switch {
		case r.Name == "node3" && (r.ClockOffsetSeconds != nil || !r.Clock.IsZero()):
			t.Errorf("the first-release node has a clock in status: %v, %v", r.Clock, r.ClockOffsetSeconds)
		case r.Name != "node3" && r.ClockOffsetSeconds == nil:
			t.Errorf("%s has no clock offset", r.Name)
		}
	}
	if w := strings.Join(st.Cluster.Warnings, "\n"); strings.Contains(w, "clock") {
		t.Errorf("clock warnings: %q", w)
	}
	// The old node's own status works and lists every node.
	if st3 := mustStatus(t, c.Nodes[2]); len(st3.Nodes) != 3 {
		t.Errorf("status on the old node lists %d nodes", len(st3.Nodes))
	}

	path := filepath.Join(t.TempDir(), "report.tar.gz")
	first.CLI("report", path)
	files := readBundle(t, path)
	var got []string
	for name, body := range files {
		switch {
		case strings.HasPrefix(name, "nodes/node3-cid") && strings.HasSuffix(name, "/unavailable.txt"):
			mustContain(t, name, body, "not available (older version)")
			got = append(got, "node3 unavailable")
		case strings.HasPrefix(name, "nodes/node3-cid"):
			t.Errorf("bundle holds %s of the old node", name)
		case strings.HasSuffix(name, "/report.json"):
			got = append(got, name)
		}
	}
	if len(got) != 3 {
		t.Errorf("bundle: %q, want node1's and node2's report.json and node3 unavailable", got)
	}
}
