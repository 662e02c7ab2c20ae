package integration

import (
	"strconv"
	"strings"
	"testing"
)

// TestJoinStandaloneMaster: joining through a node that is in no cluster is refused with
// the way forward, and changes nothing on either side.
func TestJoinStandaloneMaster(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 2)
	target, joiner := c.Nodes[0], c.Nodes[1]
	target.Start()
	joiner.Start()
	joiner.CLI("config", "set", "mine", "kept")
	fp := selfRow(t, target).Fingerprint
	errOut := joiner.CLIFail("join", target.IP+":"+itoa(target.Port), "--fingerprint", fp, "--token", "anything", "--yes")
	if !strings.Contains(errOut, "no cluster") || !strings.Contains(errOut, "pmgcm create") {
		t.Fatalf("join through a standalone node said %q", errOut)
	}
	for _, n := range c.Nodes {
		if out := n.CLI("status"); strings.TrimSpace(out) != "no cluster defined" {
			t.Fatalf("%s after a refused join: %q", n.Name, out)
		}
	}
	if got := joiner.CLI("config", "get", "mine"); got != "kept" {
		t.Fatalf("a refused join changed the joiner: %q", got)
	}
}

// TestUpdateFingerprintsAllOnFollower: renewing every node's certificate is a master's
// job; a follower refuses and names the master.
func TestUpdateFingerprintsAllOnFollower(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3)
	c.form()
	m, followers := c.roles()
	before := selfRow(t, followers[0]).Fingerprint
	errOut := followers[0].CLIFail("update-fingerprints", "--all")
	if !strings.Contains(errOut, m.IP) {
		t.Fatalf("update-fingerprints --all on a follower said %q", errOut)
	}
	if after := selfRow(t, followers[0]).Fingerprint; after != before {
		t.Fatal("a refused update-fingerprints --all renewed the certificate")
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
