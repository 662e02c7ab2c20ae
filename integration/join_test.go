package integration

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/internal/testutil"
)

// TestJoinConcurrentForwardedRotate joins two nodes at the same time (both get a CID,
// distinct), rotates the join token on a member that is not the master (the old token is
// refused afterwards, changing nothing), and joins a fourth node through a member that is
// not the master with the new token (forwarded to the master).
func TestJoinConcurrentForwardedRotate(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 4)
	logNotable(t, c)
	for _, n := range c.Nodes {
		n.Start()
	}
	n1, n2, n3, n4 := c.Nodes[0], c.Nodes[1], c.Nodes[2], c.Nodes[3]
	n1.CLI("create")
	n1.WaitMaster(15 * time.Second)
	args := joinArgsRetry(t, n1)
	oldToken := args[len(args)-1]

	// Two joins at the same time.
	var wg sync.WaitGroup
	outs, errs := make([]string, 2), make([]error, 2)
	for i, n := range []*Node{n2, n3} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			outs[i], _, errs[i] = n.run(append(args, "--yes")...)
		}()
	}
	wg.Wait()
	for i, n := range []*Node{n2, n3} {
		if errs[i] != nil {
			t.Fatalf("concurrent join of %s: %v\n%s", n.Name, errs[i], outs[i])
		}
	}
	_, cid2, _ := parseJoined(t, outs[0])
	_, cid3, _ := parseJoined(t, outs[1])
	if cid2 == cid3 || cid2 < 2 || cid3 < 2 || cid2 > 3 || cid3 > 3 {
		t.Fatalf("concurrent joins got cids %d and %d, want 2 and 3 in some order", cid2, cid3)
	}
	c.waitAllActive(c.Nodes[:3], 30*time.Second)
	waitMembersVoters(t, n1, 3, 3, 30*time.Second)
	for _, n := range c.Nodes[:3] {
		st := mustStatus(t, n)
		for _, r := range st.Nodes {
			want := map[string]uint64{n1.Name: 1, n2.Name: cid2, n3.Name: cid3}[r.Name]
			if r.CID != want {
				t.Fatalf("%s lists %s as cid %d, want %d", n.Name, r.Name, r.CID, want)
			}
		}
	}

	// Rotate the token on a member that is not the master.
	m := c.master()
	var rot *Node
	for _, n := range c.Nodes[:3] {
		if n != m {
			rot = n
			break
		}
	}
	_, rotErr, err := rot.run("join-cmd", "--rotate")
	if err != nil {
		t.Fatal(err)
	}
	mustContain(t, "join-cmd --rotate stderr", rotErr, "rotated")
	newArgs := joinArgsRetry(t, rot)
	newToken := newArgs[len(newArgs)-1]
	if newToken == oldToken {
		t.Fatalf("join-cmd --rotate on %s kept the token %q", rot.Name, oldToken)
	}
	for _, n := range c.Nodes[:3] {
		testutil.Poll(t, n.Name+" shows the new token", 15*time.Second, func() error {
			a := joinArgsRetry(t, n)
			if tok := a[len(a)-1]; tok != newToken {
				return fmt.Errorf("join-cmd prints token %q, want %q", tok, newToken)
			}
			return nil
		})
	}

	// The old token is refused, and nothing changes on either side.
	cliRetry(t, n4, "config", "set", "local/only", "n4 value")
	before := viewOf(t, m)
	msg := n4.CLIFail(append(args, "--yes")...)
	mustContain(t, "join with the rotated-out token", msg, "join token is not valid")
	checkUnchanged(t, "a join with the old token", m, before)
	checkStandalone(t, "a join with the old token", n4, "local/only", "n4 value")

	// Join through a member that is not the master, pinning that member's certificate.
	out := cliRetry(t, n4, append(joinVia(t, rot, newToken), "--yes")...)
	_, cid4, master := parseJoined(t, out)
	if cid4 != 4 {
		t.Fatalf("the join through %s got cid %d, want 4 (no CID used by the refused join)", rot.Name, cid4)
	}
	if want := net.JoinHostPort(m.IP, strconv.Itoa(m.Port)); master != want {
		t.Fatalf("the join through %s was admitted by %s, want the master %s", rot.Name, master, want)
	}
	mustContain(t, "join output", out, "full member")
	c.waitAllActive(c.Nodes, 30*time.Second)
	waitMembersVoters(t, m, 4, 3, 30*time.Second)
	waitAgree(t, c.Nodes, 30*time.Second)
	// The joined node's own configuration was replaced by the cluster's.
	if _, errOut, err := n4.run("config", "get", "local/only"); err == nil || !strings.Contains(errOut, "not found") {
		t.Fatalf("after the join, n4's own entry is still there or another error: %v %s", err, errOut)
	}
}

// TestJoinDuringFailover: the master is stopped (SIGSTOP), or killed (kill -9), just
// before a node joins through a member that is not the master. That member waits through
// the election, or finds out whether the lost master admitted the node, and the new
// master admits it: the join succeeds on its first attempt. Once the old master is back
// (SIGCONT, or a restart) it is a node, and the four nodes agree with three voters.
func TestJoinDuringFailover(t *testing.T) {
	t.Parallel()
	for _, how := range []string{"stopped", "killed"} {
		t.Run(how, func(t *testing.T) {
			t.Parallel()
			joinDuringFailover(t, how == "killed")
		})
	}
}

func joinDuringFailover(t *testing.T, kill bool) {
	c := newCluster(t, 4)
	logNotable(t, c)
	all := c.Nodes
	c.Nodes = all[:3]
	c.form()
	old, followers := c.roles()
	c.Nodes = all
	via, n4 := followers[0], all[3]
	n4.Start()
	token := joinArgs(t, via)[5]
	args := append(joinVia(t, via, token), "--yes")

	lostAt := time.Now()
	back := func() {
		if kill {
			old.Start()
		} else {
			old.Resume()
		}
	}
	if kill {
		old.Kill()
	} else {
		old.Pause()
	}
	isBack := false
	defer func() {
		if !isBack {
			back()
		}
	}()
	out, errOut, err := n4.run(args...)
	if err != nil {
		t.Fatalf("join through %s while the master %s is lost: %v\n%s%s", via.Name, old.Name, err, out, errOut)
	}
	t.Logf("joined %s after the master was lost", time.Since(lostAt).Round(time.Millisecond))
	_, cid, master := parseJoined(t, out)
	if master == net.JoinHostPort(old.IP, strconv.Itoa(old.Port)) {
		t.Fatalf("the lost master %s admitted cid %d", old.Name, cid)
	}
	back()
	isBack = true
	c.waitAllActive(c.Nodes, 30*time.Second)
	waitMembersVoters(t, c.master(), 4, 3, 30*time.Second)
	waitAgree(t, c.Nodes, 30*time.Second)
}
