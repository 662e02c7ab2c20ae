package integration

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/internal/testutil"
)

// TestDeleteNode checks `pmgcm delete`: an unknown CID and the master's own CID are
// refused (changing nothing), a delete works from a member that is not the master, and
// the deleted node, still running, is refused by the others at the TLS handshake, learns
// that it was removed, and serves no cluster data. Wiped and joined again it gets a new
// CID.
func TestDeleteNode(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3)
	logNotable(t, c)
	c.form()
	m, rest := c.roles()
	fwd, victim := rest[0], rest[1]
	cidOf := func(n *Node) uint64 {
		t.Helper()
		return localRow(mustStatus(t, n)).CID
	}
	mcid, vcid := cidOf(m), cidOf(victim)
	cliRetry(t, m, "config", "set", "cluster/key", "before delete")
	before := viewOf(t, m)

	// Refusals: an unknown CID, and the master's own, from the master and forwarded.
	for _, n := range []*Node{m, fwd} {
		msg := n.CLIFail("delete", "99")
		mustContain(t, "delete of an unknown cid on "+n.Name, msg, "no node has cid 99")
		msg = n.CLIFail("delete", strconv.FormatUint(mcid, 10))
		mustContain(t, "delete of the master on "+n.Name, msg, "is the master and cannot delete itself")
	}
	checkUnchanged(t, "refused deletes", m, before)
	checkUnchanged(t, "refused deletes", fwd, before)
	waitMembersVoters(t, m, 3, 3, 15*time.Second)

	// The victim speaks to every member before the delete.
	vmux := identityOf(t, victim)
	mmux := identityOf(t, m)
	for _, n := range []*Node{m, fwd} {
		if err := dialRPC(vmux, n); err != nil {
			t.Fatalf("before the delete, %s refuses %s: %v", n.Name, victim.Name, err)
		}
	}

	// Delete from a member that is not the master: forwarded.
	out := cliRetry(t, fwd, "delete", strconv.FormatUint(vcid, 10))
	mustContain(t, "delete output", out, fmt.Sprintf("deleted cid %d (%s, %s)", vcid, victim.Name, victim.IP))
	for _, n := range []*Node{m, fwd} {
		waitMembersVoters(t, n, 2, 2, 30*time.Second)
		st := mustStatus(t, n)
		for _, r := range st.Nodes {
			if r.CID == vcid || r.IP == victim.IP {
				t.Fatalf("%s still lists the deleted node: %s", n.Name, suffrages(st))
			}
		}
	}
	c.waitAllActive([]*Node{m, fwd}, 30*time.Second)

	// Its certificate is refused by every member, and it refuses theirs.
	for _, n := range []*Node{m, fwd} {
		testutil.Poll(t, n.Name+" refuses the deleted node", 15*time.Second, func() error {
			if err := dialRPC(vmux, n); err == nil {
				return fmt.Errorf("%s still accepts %s's certificate", n.Name, victim.Name)
			}
			return nil
		})
	}

	// The deleted node learns it was removed and serves no cluster data.
	testutil.Poll(t, victim.Name+" knows it was removed", 30*time.Second, func() error {
		st, err := victim.Status()
		if err != nil {
			return err
		}
		r := localRow(st)
		if r == nil || r.Role != api.RoleNone || r.State != api.StateDown {
			return fmt.Errorf("status of the deleted node: %s", suffrages(st))
		}
		return nil
	})
	st := mustStatus(t, victim)
	if len(st.Nodes) != 1 || st.Cluster == nil || !strings.Contains(strings.Join(st.Cluster.Warnings, " "), "removed") {
		t.Fatalf("status of the deleted node lists others or does not say it was removed: %+v %s", st.Cluster, suffrages(st))
	}
	if err := dialRPC(mmux, victim); err == nil {
		t.Fatalf("the deleted node %s still accepts the master's certificate", victim.Name)
	}
	for _, args := range [][]string{
		{"config", "get", "cluster/key"},
		{"config", "set", "cluster/key", "from the deleted node"},
		{"config", "list"},
	} {
		msg := victim.CLIFail(args...)
		mustContain(t, "pmgcm "+strings.Join(args, " ")+" on the deleted node", msg, "removed")
	}
	if got := cliRetry(t, m, "config", "get", "cluster/key"); got != "before delete" {
		t.Fatalf("the master reads cluster/key = %q after the deleted node tried to write it", got)
	}

	// Back again: stop, wipe, start, join. A new CID, never a reused one.
	victim.Stop()
	if err := os.RemoveAll(victim.DataDir); err != nil {
		t.Fatal(err)
	}
	victim.Start()
	out = cliRetry(t, victim, append(joinArgsRetry(t, m), "--yes")...)
	_, cid, _ := parseJoined(t, out)
	if cid != 4 {
		t.Fatalf("the re-joined node got cid %d, want 4 (cid %d was deleted and is never reused)", cid, vcid)
	}
	c.waitAllActive(c.Nodes, 30*time.Second)
	waitMembersVoters(t, m, 3, 3, 30*time.Second)
	waitAgree(t, c.Nodes, 30*time.Second)
	if got := cliRetry(t, victim, "config", "get", "cluster/key"); got != "before delete" {
		t.Fatalf("the re-joined node reads cluster/key = %q", got)
	}
}
