package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/internal/proc"
)

// firstRelease is the commit of the first release, whose nodes every build must work with.
const firstRelease = "1ca55cd"

var (
	oldOnce sync.Once
	oldBin  string
	oldErr  error
)

// firstReleaseDaemon builds pmgclusterd of the first release from the repository (once
// per run, into binDir), or skips the test when it cannot.
func firstReleaseDaemon(t *testing.T) string {
	t.Helper()
	oldOnce.Do(func() {
		src := filepath.Join(binDir, "src-"+firstRelease)
		if err := os.MkdirAll(src, 0o755); err != nil {
			oldErr = err
			return
		}
		archive := exec.Command("sh", "-c", fmt.Sprintf(`cd "$(git rev-parse --show-toplevel)" && git archive --format=tar %s | tar -x -C %q`, firstRelease, src))
		if out, err := archive.CombinedOutput(); err != nil {
			oldErr = fmt.Errorf("git archive %s: %v: %s", firstRelease, err, strings.TrimSpace(string(out)))
			return
		}
		bin := filepath.Join(binDir, "pmgclusterd-"+firstRelease)
		build := exec.Command("go", "build", "-o", bin, "./cmd/pmgclusterd")
		build.Dir = src
		if out, err := build.CombinedOutput(); err != nil {
			oldErr = fmt.Errorf("build pmgclusterd %s: %v: %s", firstRelease, err, out)
			return
		}
		oldBin = bin
	})
	if oldErr != nil {
		t.Skipf("no pmgclusterd of the first release: %v", oldErr)
	}
	return oldBin
}

// startBinary starts n with the daemon binary bin instead of this build's, and waits
// until its control socket answers.
func (n *Node) startBinary(bin string) {
	n.t.Helper()
	n.mu.Lock()
	p, err := proc.Start(exec.Command(bin, n.daemonArgs()...), n.LogPath)
	if err == nil {
		n.proc = p
	}
	n.mu.Unlock()
	if err != nil {
		n.t.Fatal(err)
	}
	poll(n.t, 20*time.Second, n.Name+" control socket", func() error {
		if p.Exited() {
			return fmt.Errorf("%s exited: %v\n%s", n.Name, p.Err(), n.Log())
		}
		_, _, err := n.run("status", "--list-single-node")
		return err
	})
}

// TestOpsWithFirstReleaseNode: in a cluster with a node of the first release, status
// checks the clocks of the new nodes only (the old one reports none), and pmgcm report
// records the old node as "not available (older version)" and collects the others.
func TestOpsWithFirstReleaseNode(t *testing.T) {
	old := firstReleaseDaemon(t)
	c := newCluster(t, 3)
	c.Nodes[0].Start()
	c.Nodes[1].Start()
	c.Nodes[2].startBinary(old)
	first := c.Nodes[0]
	first.CLI("create")
	first.WaitMaster(15 * time.Second)
	args := append(joinArgs(t, first), "--yes")
	for _, n := range c.Nodes[1:] {
		n.CLI(args...)
	}
	c.waitAllActive(c.Nodes, 30*time.Second)

	st := mustStatus(t, first)
	for _, r := range st.Nodes {
		switch {
		case r.Name == "node3" && (r.ClockOffsetSeconds != nil || !r.Clock.IsZero()):
			t.Errorf("the first-release node has a clock in status: %v, %v", r.Clock, r.ClockOffsetSeconds)
		case r.Name != "node3" && r.ClockOffsetSeconds == nil:
			t.Errorf("%s has no clock offset", r.Name)
		}
	}
	if w := strings.Join(st.Cluster.Warnings, "\n"); strings.Contains(w, "clock") {
		t.Errorf("clock warnings: %q", w)
	}
	// The old node's own status works and lists every node.
	if st3 := mustStatus(t, c.Nodes[2]); len(st3.Nodes) != 3 {
		t.Errorf("status on the old node lists %d nodes", len(st3.Nodes))
	}

	path := filepath.Join(t.TempDir(), "report.tar.gz")
	first.CLI("report", path)
	files := readBundle(t, path)
	var got []string
	for name, body := range files {
		switch {
		case strings.HasPrefix(name, "nodes/node3-cid") && strings.HasSuffix(name, "/unavailable.txt"):
			mustContain(t, name, body, "not available (older version)")
			got = append(got, "node3 unavailable")
		case strings.HasPrefix(name, "nodes/node3-cid"):
			t.Errorf("bundle holds %s of the old node", name)
		case strings.HasSuffix(name, "/report.json"):
			got = append(got, name)
		}
	}
	if len(got) != 3 {
		t.Errorf("bundle: %q, want node1's and node2's report.json and node3 unavailable", got)
	}
}
