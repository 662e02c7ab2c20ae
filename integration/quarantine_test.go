package integration

import (
	"strings"
	"testing"
	"time"
)

// TestQuarantineErrors: unknown and malformed message IDs are refused with a clear
// error and change nothing.
func TestQuarantineErrors(t *testing.T) {
	t.Parallel()
	mc := newMailCluster(t, 1, false)
	n := mc.Nodes[0]
	n.Start()
	n.CLI("create")
	n.WaitMaster(15 * time.Second)
	setConfig(t, mc.Nodes, keyRelayDomains, mailDomain)
	mustSend(t, mc.addr(n), mailMsg("kept", 1000))
	for _, args := range [][]string{
		{"quarantine", "show", "9-9"},
		{"quarantine", "delete", "9-9"},
		{"quarantine", "release", "../../etc/passwd"},
		{"quarantine", "show", "1-1x"},
	} {
		if errOut := n.CLIFail(args...); !strings.Contains(errOut, "no message") {
			t.Errorf("%v said %q", args, errOut)
		}
	}
	if list := n.CLI("quarantine", "list"); !strings.Contains(list, "kept") || !strings.Contains(list, "quarantined") {
		t.Fatalf("a refused command changed the quarantine:\n%s", list)
	}
}
