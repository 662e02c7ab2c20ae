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
	c.inNetns(ns)
	return c
}

// inNetns runs every node's daemon of c inside ns. Make ns before c, so that the
// namespace goes after the nodes.
func (c *Cluster) inNetns(ns *netfault.NS) {
	c.NS = ns
	for _, node := range c.Nodes {
		node.Launcher = ns.Launcher()
	}
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
