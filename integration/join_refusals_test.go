package integration

import (
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/internal/testutil"
)

// TestJoinRefusals checks every refusal of `pmgcm join`, each time that nothing changed
// on either side: the master's members and configuration, and the joining node still
// standalone with its own configuration. At the end the node joins for real and gets
// CID 2: no refused join used up a CID.
func TestJoinRefusals(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 5)
	logNotable(t, c)
	m, j, other, dupName, otherProto := c.Nodes[0], c.Nodes[1], c.Nodes[2], c.Nodes[3], c.Nodes[4]
	dupName.Name = m.Name
	otherProto.ExtraArgs = []string{"--protocol-version", "3"} // this build speaks 2
	// A node on the master's IP (another port): its IP is already a member.
	dupIP := m.Clone()
	dupIP.Index, dupIP.Name, dupIP.Port = len(c.Nodes), "dupip", testutil.FreePort(t, []string{m.IP})
	dupIP.DataDir = filepath.Join(filepath.Dir(m.DataDir), "dupip")
	dupIP.Socket = filepath.Join(filepath.Dir(m.Socket), "dupip.sock")
	dupIP.LogPath = filepath.Join(filepath.Dir(m.LogPath), "dupip.log")
	c.Nodes = append(c.Nodes, dupIP)
	for _, n := range c.Nodes {
		n.Start()
	}

	m.CLI("create")
	m.WaitMaster(15 * time.Second)
	cliRetry(t, m, "config", "set", "cluster/key", "cluster value")
	other.CLI("create")
	other.WaitMaster(15 * time.Second)
	cliRetry(t, other, "config", "set", "other/key", "other value")
	for _, n := range []*Node{j, dupName, otherProto, dupIP} {
		cliRetry(t, n, "config", "set", "local/key", n.Name+" value")
	}

	args := joinArgsRetry(t, m) // join <master> --fingerprint FP --token T
	masterAddr, fp, token := args[1], args[3], args[5]
	before := viewOf(t, m)
	otherBefore := viewOf(t, other)
	unchanged := func(what string, joiner *Node) {
		t.Helper()
		checkUnchanged(t, what, m, before)
		if joiner == other {
			checkUnchanged(t, what, other, otherBefore)
		} else {
			checkStandalone(t, what, joiner, "local/key", joiner.Name+" value")
		}
	}

	// Wrong token.
	msg := j.CLIFail(append(withToken(args, "not-the-token"), "--yes")...)
	mustContain(t, "join with a wrong token", msg, "join token is not valid")
	unchanged("a wrong token", j)

	// Wrong fingerprint: a well-formed one, of another cluster's master.
	otherFP := localRow(mustStatus(t, other)).Fingerprint
	if otherFP == "" || otherFP == fp {
		t.Fatalf("the other cluster's master has fingerprint %q, the master %q", otherFP, fp)
	}
	msg = j.CLIFail("join", masterAddr, "--fingerprint", otherFP, "--token", token, "--yes")
	mustContain(t, "join with another fingerprint", msg, "fingerprint mismatch", otherFP)
	unchanged("a wrong fingerprint", j)

	// A node already in a cluster.
	msg = other.CLIFail(append(args, "--yes")...)
	mustContain(t, "join of a node that ran create", msg, "already in a cluster")
	unchanged("a join of a node in another cluster", other)

	// The name, and the IP, of a member.
	msg = dupName.CLIFail(append(args, "--yes")...)
	mustContain(t, "join of a node named like a member", msg, "already", m.Name)
	unchanged("a join under a member's name", dupName)
	msg = dupIP.CLIFail(append(args, "--yes")...)
	mustContain(t, "join of a node on a member's IP", msg, "already", m.IP)
	unchanged("a join from a member's IP", dupIP)

	// Incompatible protocol versions: both are named.
	msg = otherProto.CLIFail(append(args, "--yes")...)
	mustContain(t, "join across protocol versions", msg, "protocol 2", "protocol 3")
	unchanged("a join across protocol versions", otherProto)

	// The master unreachable: nothing listens at the address; and something accepts TCP
	// but never speaks (a hung host). Both fail within seconds with a clear message.
	nowhere := testutil.IPs(2)
	closedAddr := net.JoinHostPort(nowhere[0], strconv.Itoa(testutil.FreePort(t, nowhere[:1])))
	silent, err := net.Listen("tcp", net.JoinHostPort(nowhere[1], "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close() // never accepted: the kernel completes TCP, TLS never starts
	for _, addr := range []string{closedAddr, silent.Addr().String()} {
		start := time.Now()
		msg = j.CLIFail("join", addr, "--fingerprint", fp, "--token", token, "--yes")
		if took := time.Since(start); took > 15*time.Second {
			t.Fatalf("join of unreachable %s took %s", addr, took)
		}
		mustContain(t, "join of an unreachable master", msg, "cannot reach", addr)
		unchanged("a join of an unreachable master", j)
	}

	// Not on a terminal: refused without --yes, without --fingerprint and without a token.
	out, msg, err := j.run(args...)
	if err == nil {
		t.Fatalf("join without --yes off a terminal succeeded:\n%s", out)
	}
	mustContain(t, "join without --yes", msg, "--yes")
	unchanged("a join without --yes", j)
	out, msg, err = j.run("join", masterAddr, "--token", token, "--yes")
	if err == nil {
		t.Fatalf("join without --fingerprint off a terminal succeeded:\n%s", out)
	}
	mustContain(t, "join without --fingerprint", msg, "not confirmed", "--fingerprint")
	mustContain(t, "join without --fingerprint shows the fingerprint", out, fp)
	unchanged("a join without --fingerprint", j)
	out, msg, err = j.run("join", masterAddr, "--fingerprint", fp, "--yes")
	if err == nil {
		t.Fatalf("join without a token off a terminal succeeded:\n%s", out)
	}
	mustContain(t, "join without a token", msg, "no join token")
	unchanged("a join without a token", j)

	// Now for real: the first CID given out is 2, and j's own data is replaced.
	out = cliRetry(t, j, append(args, "--yes")...)
	_, cid, _ := parseJoined(t, out)
	if cid != 2 {
		t.Fatalf("the first successful join got cid %d, want 2: a refused join used up a CID", cid)
	}
	c.waitAllActive([]*Node{m, j}, 30*time.Second)
	waitMembersVoters(t, m, 2, 2, 30*time.Second)
	if got := cliRetry(t, j, "config", "get", "cluster/key"); got != "cluster value" {
		t.Fatalf("after the join, %s reads cluster/key = %q", j.Name, got)
	}
	if _, errOut, err := j.run("config", "get", "local/key"); err == nil || !strings.Contains(errOut, "not found") {
		t.Fatalf("after the join, %s's own entry local/key is still there (or another error): %v %s", j.Name, err, errOut)
	}

	// A member joining again (its own cluster) is refused too, changing nothing.
	before = viewOf(t, m)
	msg = j.CLIFail(append(args, "--yes")...)
	mustContain(t, "join of a member", msg, "already in a cluster")
	checkUnchanged(t, "a member's second join", m, before)
	checkUnchanged(t, "a member's second join", j, before)
}
