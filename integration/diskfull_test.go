package integration

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/api"
)

// mountSmallMailDisk puts n's mail store (stopped node) on a tmpfs of size bytes that the
// test mounts and unmounts, keeping what the store held. It skips unless root.
func mountSmallMailDisk(t *testing.T, n *Node, size int) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a small tmpfs for the mail store needs root")
	}
	dir := filepath.Join(n.DataDir, "mail")
	orig := dir + ".orig"
	if err := os.Rename(dir, orig); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d,mode=0700", size), "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", dir).Run() })
	if out, err := exec.Command("cp", "-a", orig+"/.", dir+"/").CombinedOutput(); err != nil {
		t.Fatalf("copy the mail store onto the tmpfs: %v: %s", err, out)
	}
	return dir
}

// fillDisk writes path until the file system is full.
func fillDisk(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return
			}
			t.Fatal(err)
		}
	}
}

// A node whose mail disk is full: its status row (on itself and on the other node) says
// so by name and reason, the metrics expose it, and once space is back the node has the
// mail it missed within 5 s (not at the replicator's 30 s backoff).
func TestDiskFullMailStore(t *testing.T) {
	t.Parallel()
	mc := newMailCluster(t, 2, false)
	urls := withMetrics(t, mc.Cluster)
	mc.form()
	setConfig(t, mc.Nodes, keyRelayDomains, mailDomain)
	n1, n2 := mc.Nodes[0], mc.Nodes[1]
	n2.Stop()
	dir := mountSmallMailDisk(t, n2, 16<<20)
	n2.Start()
	mc.waitAllActive(mc.Nodes, 30*time.Second)

	filler := filepath.Join(dir, "filler")
	fillDisk(t, filler)
	want := map[string]string{}
	for i := 0; i < 3; i++ {
		msg := mailMsg(fmt.Sprintf("while-full-%d", i), 200<<10)
		mustSend(t, mc.addr(n1), msg)
		want[fmt.Sprintf("while-full-%d", i)] = sha(msg)
	}
	const reason = "disk full: no space left for the mail store"
	waitUntil(t, 10*time.Second, "both nodes name node2's full disk", func() error {
		for _, asker := range []*Node{n2, n1} {
			st, err := asker.Status()
			if err != nil {
				return err
			}
			for _, r := range st.Nodes {
				if r.Name == n2.Name && (r.State != api.StateSyncing || !strings.Contains(r.Reason, reason)) {
					return fmt.Errorf("%s shows %s %s %q", asker.Name, r.Name, r.State, r.Reason)
				}
			}
		}
		out := n1.CLI("status")
		if !strings.Contains(out, "cid 2 ("+n2.Name+"): "+reason) {
			return fmt.Errorf("status table does not name the node and reason:\n%s", out)
		}
		return nil
	})
	m, err := scrape(urls[n2])
	if err != nil {
		t.Fatal(err)
	}
	if m["pmgcm_mail_disk_full"] != 1 {
		t.Errorf("pmgcm_mail_disk_full = %v on the full node, want 1", m["pmgcm_mail_disk_full"])
	}

	// Stay full long enough for the replicator's retries of the missing bodies to back
	// off (1 s doubling): without the watcher's kick the next one would be seconds away.
	holdFor(8 * time.Second)
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	freed := time.Now()
	waitMail(t, []*Node{n2}, want, 20*time.Second)
	took := time.Since(freed)
	t.Logf("node2 has the mail it missed %s after space came back", took.Round(time.Millisecond))
	if took > 5*time.Second {
		t.Errorf("catching up after the disk was freed took %s, want under 5s", took)
	}
	waitUntil(t, 5*time.Second, "pmgcm_mail_disk_full back to 0", func() error {
		m, err := scrape(urls[n2])
		if err != nil {
			return err
		}
		if m["pmgcm_mail_disk_full"] != 0 {
			return fmt.Errorf("pmgcm_mail_disk_full = %v", m["pmgcm_mail_disk_full"])
		}
		return nil
	})
}
