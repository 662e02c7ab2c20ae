package integration

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/api"
)

// A new node that reaches only the followers, not the master, joins through a follower:
// the master admits it (the request is forwarded) and then cannot reach it. The join
// must not report a full member; it fails after --wait, saying what the node reaches,
// what it does not, and what to run. Once the network is fixed the node catches up.
func TestNetfaultPartitionedJoin(t *testing.T) {
	t.Parallel()
	c := newNetnsCluster(t, 4)
	c.formNodes(3)
	master, n2, n4 := c.Nodes[0], c.Nodes[1], c.Nodes[3]
	n4.Start()
	c.NS.Cut(n4.IP, master.IP)

	// Join through n2, trusting n2's certificate, with the cluster's token.
	jc := joinArgs(t, master) // join <master> --fingerprint FP --token T
	token := jc[5]
	var fp2 string
	for _, r := range mustDrillStatus(t, n2).Nodes {
		if r.Local {
			fp2 = r.Fingerprint
		}
	}
	via := n2.IP + ":" + strconv.Itoa(n2.Port)
	start := time.Now()
	out, errOut, err := n4.run("join", via, "--fingerprint", fp2, "--token", token, "--yes", "--wait", "6s")
	t.Logf("join took %s; stdout:\n%s\nstderr:\n%s", time.Since(start).Round(time.Millisecond), out, errOut)
	if err == nil {
		t.Fatalf("join through %s succeeded for a node that cannot reach the master", via)
	}
	for _, want := range []string{
		"cannot reach",   // what it cannot reach
		master.Name,      // ... named
		n2.Name,          // what it can reach
		"pmgcm delete 4", // what to run on the master
	} {
		if !strings.Contains(errOut, want) {
			t.Errorf("join error does not mention %q:\n%s", want, errOut)
		}
	}
	self, err := drillSelf(n4)
	if err != nil {
		t.Fatal(err)
	}
	if self.State == api.StateActive {
		t.Errorf("n4 shows itself %s with applied index %d and master %d", self.State, self.AppliedIndex, self.MasterCID)
	}

	// The network is fixed: the node catches up without anything else done.
	c.NS.Heal()
	healed := time.Now()
	c.waitAllActive(c.Nodes, 30*time.Second)
	t.Logf("all four active %s after the heal", time.Since(healed).Round(time.Millisecond))
}
