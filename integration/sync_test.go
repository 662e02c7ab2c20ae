package integration

import (
	"strings"
	"testing"
)

// TestSyncHealthyNode: on a healthy node, sync (with no flag or with the master's IP)
// catches up and returns; naming a node that is not the master is refused clearly.
func TestSyncHealthyNode(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3)
	c.form()
	m, followers := c.roles()
	f, other := followers[0], followers[1]
	m.CLI("config", "set", "before/sync", "1")
	if out := f.CLI("sync"); !strings.Contains(out, "in sync with the master") {
		t.Fatalf("sync said %q", out)
	}
	if got := f.CLI("config", "get", "before/sync", "--stale"); got != "1" {
		t.Fatalf("after sync the node's own state reads %q", got)
	}
	if out := f.CLI("sync", "--master_ip", m.IP); !strings.Contains(out, "in sync") {
		t.Fatalf("sync --master_ip <master> said %q", out)
	}
	errOut := f.CLIFail("sync", "--master_ip", other.IP)
	if !strings.Contains(errOut, other.IP+" is not the master") || !strings.Contains(errOut, m.IP) {
		t.Fatalf("sync --master_ip <not the master> said %q", errOut)
	}
	if errOut := f.CLIFail("sync", "--master_ip", "not-an-ip"); !strings.Contains(errOut, "IP") {
		t.Fatalf("sync --master_ip not-an-ip said %q", errOut)
	}
}
