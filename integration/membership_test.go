package integration

import (
	"fmt"
	"strings"
	"testing"
)

// TestThreeNodeCluster forms a cluster with join-cmd's output, checks that every node's
// status agrees, and that configuration written on any node is read on every other.
func TestThreeNodeCluster(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3)
	c.form()
	for _, n := range c.Nodes {
		st, err := n.Status()
		if err != nil {
			t.Fatal(err)
		}
		if got := voters(st); got != 3 {
			t.Fatalf("%s sees %d voters, want 3", n.Name, got)
		}
		cids := map[uint64]bool{}
		for _, r := range st.Nodes {
			cids[r.CID] = true
			if r.Sys == nil || r.Sys.UptimeSeconds <= 0 {
				t.Fatalf("%s: row %s lacks live metrics: %+v", n.Name, r.Name, r)
			}
		}
		if !cids[1] || !cids[2] || !cids[3] {
			t.Fatalf("%s: CIDs %v, want 1, 2, 3", n.Name, cids)
		}
		table := n.CLI("status")
		if strings.Count(table, " master ") != 1 || strings.Count(table, " node ") != 2 {
			t.Fatalf("%s status table:\n%s", n.Name, table)
		}
	}
	for i, w := range c.Nodes {
		key, val := fmt.Sprintf("from/%s", w.Name), fmt.Sprintf("value %d", i)
		w.CLI("config", "set", key, val)
		for _, r := range c.Nodes {
			if got := r.CLI("config", "get", key); got != val {
				t.Fatalf("%s wrote %s=%q, %s reads %q", w.Name, key, val, r.Name, got)
			}
		}
	}
}
