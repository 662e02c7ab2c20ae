package integration

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/internal/testutil"
)

// mountTmpfs mounts a tmpfs of size at dir for the test, or skips it when that is not
// possible (not root, no mount).
func mountTmpfs(t *testing.T, dir, size string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the disk guard test mounts a tmpfs: run it as root")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0700", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs at %s (%v: %s): the disk guard test needs it", dir, err, strings.TrimSpace(string(out)))
	}
}

// TestDiskGuard: node2's data directory is on a 64 MiB tmpfs. Filled to below 5% free,
// node2 answers SMTP with 452 4.3.1, refuses configuration writes through it with an
// error naming it and its free space, status on the other node warns, the metrics and
// /health/mail say so; once the file is gone everything resumes by itself.
func TestDiskGuard(t *testing.T) {
	mc := newMailCluster(t, 2, false)
	urls := withMetrics(t, mc.Cluster)
	n1, n2 := mc.Nodes[0], mc.Nodes[1]
	mountTmpfs(t, n2.DataDir, "64m")
	t.Cleanup(func() {
		n2.kill() // before the unmount, which a running daemon would hold busy
		if out, err := exec.Command("umount", n2.DataDir).CombinedOutput(); err != nil {
			t.Logf("umount %s: %v: %s", n2.DataDir, err, out)
			_ = exec.Command("umount", "-l", n2.DataDir).Run()
		}
	})
	mc.form()
	setConfig(t, mc.Nodes, "mail/relay_domains", mailDomain)
	mustSend(t, mc.addr(n2), mailMsg("before", 100))

	// Fill the tmpfs to 2 MiB free: 3.1%, below the default 5%.
	var st unix.Statfs_t
	if err := unix.Statfs(n2.DataDir, &st); err != nil {
		t.Fatal(err)
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	fill := filepath.Join(n2.DataDir, "fill")
	f, err := os.Create(fill)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	for left := free - 2<<20; left > 0; left -= int64(len(chunk)) {
		if _, err := f.Write(chunk[:min(int64(len(chunk)), left)]); err != nil {
			t.Fatalf("filling the tmpfs: %v", err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	filled := time.Now()

	testutil.Poll(t, "node2 answers SMTP 452", 10*time.Second, func() error {
		err := sendOne(mc.addr(n2), []string{"user@" + mailDomain}, mailMsg("during", 100))
		if smtpCode(err) != 452 || !strings.Contains(err.Error(), "4.3.1 Insufficient system storage") {
			return fmt.Errorf("send: %v, want 452 4.3.1 Insufficient system storage", err)
		}
		return nil
	})
	t.Logf("disk guard tripped %s after the fill", time.Since(filled).Round(time.Millisecond))
	// The other node still takes mail.
	mustSend(t, mc.addr(n1), mailMsg("to node1", 100))

	errOut := n2.CLIFail("config", "set", "k1", "v")
	t.Logf("config set through node2: %s", errOut)
	mustContain(t, "config set through node2", errOut, "node2 (cid 2)", "disk guard", "% free", "below 5%", "free space on node2")
	// Through node1 the write goes on, and node2 still applies it (Raft's own writes are
	// not refused).
	n1.CLI("config", "set", "k2", "v")

	testutil.Poll(t, "status on node1 warns of node2's disk", 10*time.Second, func() error {
		st, err := n1.Status()
		if err != nil {
			return err
		}
		w := strings.Join(st.Cluster.Warnings, "\n")
		if !strings.Contains(w, "node2: disk guard: ") || !strings.Contains(w, "% free below 5%") {
			return fmt.Errorf("warnings: %q", w)
		}
		return nil
	})
	mustContain(t, "status table", n1.CLI("status"), "warning: node2: disk guard:")
	testutil.Poll(t, "node2's metrics show the guard", 5*time.Second, func() error {
		m, err := scrape(urls[n2])
		if err != nil {
			return err
		}
		if m["pmgcm_disk_guard_active"] != 1 || m["pmgcm_disk_free_bytes"] <= 0 || m["pmgcm_disk_free_bytes"] > 4<<20 {
			return fmt.Errorf("pmgcm_disk_guard_active %v, pmgcm_disk_free_bytes %v", m["pmgcm_disk_guard_active"], m["pmgcm_disk_free_bytes"])
		}
		return nil
	})
	waitHealth(t, baseOf(urls[n2]), api.PathHealthMail, http.StatusServiceUnavailable, "disk guard", 5*time.Second)
	waitHealth(t, baseOf(urls[n1]), api.PathHealthMail, http.StatusOK, "", 5*time.Second)

	// Room again: everything resumes by itself.
	if err := os.Remove(fill); err != nil {
		t.Fatal(err)
	}
	freed := time.Now()
	testutil.Poll(t, "node2 takes mail again", 5*time.Second, func() error {
		return sendOne(mc.addr(n2), []string{"user@" + mailDomain}, mailMsg("after", 100))
	})
	t.Logf("mail resumed %s after the file was deleted", time.Since(freed).Round(time.Millisecond))
	n2.CLI("config", "set", "k1", "v")
	waitHealth(t, baseOf(urls[n2]), api.PathHealthMail, http.StatusOK, "", 5*time.Second)
	testutil.Poll(t, "the warning is gone", 5*time.Second, func() error {
		st, err := n1.Status()
		if err != nil {
			return err
		}
		if w := strings.Join(st.Cluster.Warnings, "\n"); strings.Contains(w, "disk guard") {
			return fmt.Errorf("warnings: %q", w)
		}
		m, err := scrape(urls[n2])
		if err != nil {
			return err
		}
		if m["pmgcm_disk_guard_active"] != 0 {
			return fmt.Errorf("pmgcm_disk_guard_active %v", m["pmgcm_disk_guard_active"])
		}
		return nil
	})
	if !strings.Contains(n2.Log(), "disk guard: free space is above --min-free-disk again") {
		t.Error("node2 did not log that the guard cleared")
	}
}
