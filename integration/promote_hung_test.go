package integration

import (
	"strings"
	"testing"
	"time"
)

// promoteAnswerLimit is how soon a forced promotion must answer, however the other
// voters fail.
const promoteAnswerLimit = 20 * time.Second

// TestForcedPromoteWithHungPeers: the master and the other voter of a 3-node cluster are
// hung (SIGSTOP: their sockets accept, nobody answers, TLS handshakes never finish);
// 'pmgcm promote --force' on the third node answers within 20 s, promoted or refused
// with the reason, and a promoted node takes writes.
func TestForcedPromoteWithHungPeers(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3)
	c.form()
	m, followers := c.roles()
	hung, survivor := []*Node{m, followers[0]}, followers[1]
	m.CLI("config", "set", "before", "1")
	// Connections between the nodes are open and pooled: the hung peers keep them.
	survivor.CLI("status")
	for _, n := range hung {
		n.Pause()
	}
	t.Cleanup(func() {
		for _, n := range hung {
			n.Resume()
		}
	})
	start := time.Now()
	out, errOut, err := survivor.run("promote", "--force", "--yes")
	took := time.Since(start)
	t.Logf("promote --force answered after %s: err=%v\n%s%s", took.Round(time.Millisecond), err, out, errOut)
	for _, line := range strings.Split(survivor.Log(), "\n") {
		if strings.Contains(line, "promot") {
			t.Log(line)
		}
	}
	if took > promoteAnswerLimit {
		t.Fatalf("promote --force with hung peers answered after %s (limit %s)\n%s", took, promoteAnswerLimit, survivor.Log())
	}
	if strings.Contains(out+errOut, "no answer from pmgclusterd") {
		t.Fatalf("the CLI gave up waiting: %s%s", out, errOut)
	}
	if err != nil {
		// A refusal must say why.
		if strings.TrimSpace(errOut) == "" {
			t.Fatal("refused without a reason")
		}
		return
	}
	survivor.CLI("config", "set", "after", "2")
}
