package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/internal/netfault"
)

// newNetnsCluster is newCluster with every node's daemon inside a network namespace of
// the test's own (internal/netfault), where c.NS cuts and drops traffic between the
// nodes' addresses with nftables. The CLI stays outside: the control sockets are files.
// It skips the test unless it runs as root with ip and nft installed
// (scripts/netfault-deps.sh). The namespace goes when the test ends, after the nodes.
func newNetnsCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	ns := netfault.New(t) // cleaned up after newCluster's cleanup has killed the nodes
	c := newCluster(t, n)
	c.NS = ns
	for _, node := range c.Nodes {
		node.Launcher = ns.Launcher()
	}
	return c
}

// formNodes is form for the first k nodes of c only.
func (c *Cluster) formNodes(k int) {
	c.t.Helper()
	nodes := c.Nodes[:k]
	for _, n := range nodes {
		n.Start()
	}
	first := nodes[0]
	first.CLI("create")
	first.WaitMaster(15 * time.Second)
	args := append(joinArgs(c.t, first), "--yes")
	for _, n := range nodes[1:] {
		n.CLI(args...)
	}
	c.waitAllActive(nodes, 30*time.Second)
}

// ips returns the addresses of nodes.
func ips(nodes ...*Node) []string {
	out := make([]string, len(nodes))
	for i, n := range nodes {
		out[i] = n.IP
	}
	return out
}

// rowsLine is a one-line summary of a status, for logs and failures.
func rowsLine(st api.Status) string {
	var b strings.Builder
	for _, r := range st.Nodes {
		fmt.Fprintf(&b, "[%s(%d) %s %s term %d applied %d master %d%s] ", r.Name, r.CID, r.Role, r.State,
			r.Term, r.AppliedIndex, r.MasterCID, map[bool]string{true: " local"}[r.Local])
	}
	return b.String()
}

// waitUntil calls fn until it returns nil or timeout passes, then fails the test with
// fn's last error. (The package's own poll helper has moved between branches; this one
// keeps the netfault tests independent of its signature.)
func waitUntil(t testing.TB, timeout time.Duration, what string, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached within %s: %v", what, timeout, err)
		}
		time.Sleep(25 * time.Millisecond) // the polling interval
	}
}
