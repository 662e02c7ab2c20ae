package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/internal/testutil"
)

// selfRow returns node n's own row of its status.
func selfRow(t testing.TB, n *Node) api.Node {
	t.Helper()
	st, err := n.Status()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range st.Nodes {
		if r.Local {
			return r
		}
	}
	t.Fatalf("%s: no local row in status", n.Name)
	return api.Node{}
}

// waitFenced waits until n's status says it was superseded.
func waitFenced(t testing.TB, n *Node) api.Status {
	t.Helper()
	var st api.Status
	testutil.Poll(t, n.Name+" fenced", 20*time.Second, func() error {
		var err error
		if st, err = n.Status(); err != nil {
			return err
		}
		if st.Cluster == nil || len(st.Cluster.Warnings) == 0 || !strings.Contains(st.Cluster.Warnings[0], "superseded") {
			return fmt.Errorf("status %+v", st.Cluster)
		}
		return nil
	})
	return st
}

// TestPromoteGraceful: promote on a follower moves the master there; on the master it
// changes nothing; with a node down it still works.
func TestPromoteGraceful(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3)
	c.form()
	first, followers := c.roles()
	follower, third := followers[0], followers[1]
	if out := first.CLI("promote"); !strings.Contains(out, "already the master") {
		t.Fatalf("promote on the master said %q", out)
	}
	follower.CLI("promote")
	if r := selfRow(t, follower); r.Role != api.RoleMaster {
		t.Fatalf("after promote %s is %s", follower.Name, r.Role)
	}
	follower.CLI("config", "set", "after/promote", "1")
	c.waitAllActive(c.Nodes, 20*time.Second)

	// With one node down the other two still have a quorum: promote works.
	first.Kill()
	third.CLI("promote")
	if r := selfRow(t, third); r.Role != api.RoleMaster {
		t.Fatalf("after promote with a node down %s is %s", third.Name, r.Role)
	}
	if got := third.CLI("config", "get", "after/promote"); got != "1" {
		t.Fatalf("entry lost across promotions: %q", got)
	}
	first.Start()
	c.waitAllActive(c.Nodes, 30*time.Second)
}

// TestTwoNodeMasterDies: the manual's Master Failure on a 2-node cluster. promote
// refuses without --force; with it the survivor leads a new epoch; the old master, when
// it restarts, is fenced and accepts nothing until sync --master_ip brings it back.
func TestTwoNodeMasterDies(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 2)
	c.form()
	old, survivor := c.Nodes[0], c.Nodes[1]
	old.CLI("config", "set", "before", "kept")
	old.Kill()

	// The survivor alone has no quorum: status says writes are unavailable.
	testutil.Poll(t, "warning about writes", 20*time.Second, func() error {
		st, err := survivor.Status()
		if err != nil {
			return err
		}
		if st.Cluster == nil || len(st.Cluster.Warnings) == 0 || !strings.Contains(st.Cluster.Warnings[0], "writes are unavailable") {
			return fmt.Errorf("cluster %+v", st.Cluster)
		}
		return nil
	})
	if errOut := survivor.CLIFail("config", "set", "k", "v"); !strings.Contains(errOut, "no master") {
		t.Fatalf("write without quorum said %q", errOut)
	}
	errOut := survivor.CLIFail("promote")
	if !strings.Contains(errOut, "--force") || !strings.Contains(errOut, "quorum") {
		t.Fatalf("promote without --force said %q", errOut)
	}
	if r := selfRow(t, survivor); r.Role == api.RoleMaster {
		t.Fatal("a refused promote changed the role")
	}
	out := survivor.CLI("promote", "--force", "--yes")
	if !strings.Contains(out, "epoch 2") {
		t.Fatalf("forced promote said %q", out)
	}
	survivor.CLI("config", "set", "after", "new-epoch")
	if got := survivor.CLI("config", "get", "before"); got != "kept" {
		t.Fatalf("entry lost in the forced promote: %q", got)
	}

	// The old master comes back with its old configuration: it must stay fenced.
	old.Start()
	st := waitFenced(t, old)
	if !strings.Contains(st.Cluster.Warnings[0], "pmgcm sync --master_ip "+survivor.IP) {
		t.Fatalf("fenced status does not name the way back: %q", st.Cluster.Warnings[0])
	}
	if errOut := old.CLIFail("config", "set", "split", "brain"); !strings.Contains(errOut, "superseded") {
		t.Fatalf("write on the fenced node said %q", errOut)
	}
	if errOut := survivor.CLIFail("config", "get", "split"); !strings.Contains(errOut, "not found") {
		t.Fatalf("the fenced node's write reached the cluster: %q", errOut)
	}
	if r := selfRow(t, survivor); r.Role != api.RoleMaster {
		t.Fatalf("the old master disturbed the new one: %s is %s", survivor.Name, r.Role)
	}

	if errOut := old.CLIFail("sync"); !strings.Contains(errOut, "--master_ip "+survivor.IP) {
		t.Fatalf("sync without --master_ip on a fenced node said %q", errOut)
	}
	old.CLI("sync", "--master_ip", survivor.IP)
	c.waitAllActive(c.Nodes, 30*time.Second)
	if got := old.CLI("config", "get", "after"); got != "new-epoch" {
		t.Fatalf("re-admitted node reads %q", got)
	}
	for _, n := range c.Nodes {
		st, _ := n.Status()
		if st.Cluster.Epoch != 2 || st.Cluster.LeaderCID != 2 {
			t.Fatalf("%s: epoch %d master cid %d, want epoch 2 master cid 2", n.Name, st.Cluster.Epoch, st.Cluster.LeaderCID)
		}
		if r := selfRow(t, n); n == old && r.CID != 1 {
			t.Fatalf("re-admitted node has cid %d, want its old 1", r.CID)
		}
	}
}

// TestForcedPromoteFencesOldMajority: two of three nodes die; the third is forced to be
// master and takes writes; the two come back together with their old configuration (a
// majority of it) and must neither elect a master nor change the new master's state.
func TestForcedPromoteFencesOldMajority(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3)
	c.form()
	m, followers := c.roles()
	dead, survivor := []*Node{m, followers[0]}, followers[1]
	m.CLI("config", "set", "before", "1")
	testutil.Poll(t, "survivor has the entry", 10*time.Second, func() error {
		got, _, err := survivor.run("config", "get", "before")
		if err == nil && got == "1" {
			return nil
		}
		return fmt.Errorf("got %q, %v", got, err)
	})
	for _, n := range dead {
		n.Kill()
	}
	survivor.CLI("promote", "--force", "--yes")
	survivor.CLI("config", "set", "after", "2")
	before, err := survivor.Status()
	if err != nil {
		t.Fatal(err)
	}

	for _, n := range dead {
		if err := n.start(); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range dead {
		waitFenced(t, n)
		if errOut := n.CLIFail("config", "set", "old", "majority"); !strings.Contains(errOut, "superseded") {
			t.Fatalf("%s: write said %q", n.Name, errOut)
		}
	}
	after, err := survivor.Status()
	if err != nil {
		t.Fatal(err)
	}
	if after.Cluster.LeaderCID != before.Cluster.LeaderCID || after.Cluster.Epoch != before.Cluster.Epoch {
		t.Fatalf("the old majority disturbed the new master: %+v -> %+v", before.Cluster, after.Cluster)
	}
	if errOut := survivor.CLIFail("config", "get", "old"); !strings.Contains(errOut, "not found") {
		t.Fatalf("the old majority wrote: %q", errOut)
	}
	for _, n := range dead {
		n.CLI("sync", "--master_ip", survivor.IP)
	}
	c.waitAllActive(c.Nodes, 40*time.Second)
	for _, n := range c.Nodes {
		if got := n.CLI("config", "get", "after"); got != "2" {
			t.Fatalf("%s reads after=%q", n.Name, got)
		}
	}
}
