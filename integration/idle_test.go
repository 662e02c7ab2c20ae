package integration

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/internal/proc"
	"github.com/pmgcm/pmgcm/internal/testutil"
)

// cpuSeconds returns the CPU time (user + system) the process pid has used so far.
func cpuSeconds(t testing.TB, pid int) float64 {
	t.Helper()
	d, err := proc.CPUTime(pid)
	if err != nil {
		t.Fatalf("read the CPU time of pid %d: %v", pid, err)
	}
	return d.Seconds()
}

// idleCPULimit is the CPU a node that takes part in nothing may use per second of wall
// time: a fraction of one core for its timers, the control socket and the race
// detector's overhead. A node that loops without waiting uses a whole core.
const idleCPULimit = 0.15

// measureIdle measures the CPU the node's daemon uses over d, fails the test above
// idleCPULimit, and logs the figure, with that of the live member ref over the same
// window for comparison.
func measureIdle(t *testing.T, n *Node, what string, ref *Node, d time.Duration) {
	t.Helper()
	pid, refPid := n.process().Pid(), ref.process().Pid()
	start, refStart, t0 := cpuSeconds(t, pid), cpuSeconds(t, refPid), time.Now()
	<-time.After(d) // the measurement window itself, not a wait for a state
	used, refUsed, wall := cpuSeconds(t, pid)-start, cpuSeconds(t, refPid)-refStart, time.Since(t0).Seconds()
	t.Logf("%s (%s): %.2f CPU-seconds in %.1f s (%.0f%% of a core); the live master %s: %.2f",
		what, n.Name, used, wall, 100*used/wall, ref.Name, refUsed)
	if used/wall > idleCPULimit {
		t.Errorf("%s (%s) spins: %.2f CPU-seconds in %.1f s, over %.0f%% of a core", what, n.Name, used, wall, 100*idleCPULimit)
	}
}

// TestDeletedNodeIdles: a node deleted while it runs stops Raft and then idles: its
// member-list follower and configuration exporter wait for a new Raft instance (a join)
// instead of looping on the closed one.
func TestDeletedNodeIdles(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 2)
	victim := c.Nodes[1]
	victim.ExtraArgs = []string{"--config-export-dir", filepath.Join(t.TempDir(), "export")}
	c.form()
	m := c.master()
	if m == victim {
		cliRetry(t, c.Nodes[0], "promote")
		m = c.Nodes[0]
	}
	vcid := localRow(mustStatus(t, victim)).CID
	cliRetry(t, m, "delete", strconv.FormatUint(vcid, 10))
	testutil.Poll(t, victim.Name+" knows it was removed", 30*time.Second, func() error {
		st, err := victim.Status()
		if err != nil {
			return err
		}
		if r := localRow(st); r == nil || r.Role != api.RoleNone || st.Cluster == nil ||
			!strings.Contains(strings.Join(st.Cluster.Warnings, " "), "removed") {
			return fmt.Errorf("status of the deleted node: %s", suffrages(st))
		}
		return nil
	})
	measureIdle(t, victim, "deleted node", m, 4*time.Second)
}

// TestFencedAtRunTime: a member cut off while another is promoted by force learns, once
// the network heals, that it was fenced from the first connection the new master refuses
// (the refusal carries the epoch), well before the periodic standing check would tell it;
// and then it idles.
func TestFencedAtRunTime(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 2)
	for _, n := range c.Nodes {
		n.ExtraArgs = []string{"--fault-injection"}
	}
	c.form()
	a, b := c.Nodes[0], c.Nodes[1]
	a.Partition(b)
	b.Partition(a)
	testutil.Poll(t, a.Name+" lost its quorum", 20*time.Second, func() error {
		out, msg, err := a.run("promote")
		if err == nil || !strings.Contains(msg, "quorum") {
			return fmt.Errorf("promote without --force: %q %q %v", out, msg, err)
		}
		return nil
	})
	a.CLI("promote", "--force", "--yes")
	a.WaitMaster(15 * time.Second)
	healed := time.Now()
	a.Partition()
	b.Partition()
	waitFenced(t, b)
	learned := time.Since(healed)
	t.Logf("%s learned it was fenced %.1f s after the network healed", b.Name, learned.Seconds())
	// From a refusal that named the new epoch, not from the periodic check.
	if !strings.Contains(b.Log(), "a peer refused this node and names a newer epoch") {
		t.Errorf("%s was not told the epoch by a refused connection", b.Name)
	}
	if learned > standingBackstop/3 {
		t.Errorf("%s learned it was fenced only after %s: not from the refused connections", b.Name, learned)
	}
	measureIdle(t, b, "fenced node", a, 4*time.Second)
}

// standingBackstop is the daemon's period of its standing check (daemon.standingInterval).
const standingBackstop = 10 * time.Second
