package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/internal/testutil"
)

// TestRefusesDataDirInUse: a second daemon on the same data directory refuses to start,
// names the holder, and leaves the first one running.
func TestRefusesDataDirInUse(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 1)
	n := c.Nodes[0]
	n.Start()
	n.CLI("create")
	other := n.Clone()
	other.Socket = n.Socket + ".2"
	out, code := other.RunDaemon(20 * time.Second)
	if code == 0 || !strings.Contains(out, "in use by another pmgclusterd") || !strings.Contains(out, "pid") {
		t.Fatalf("second daemon on the same dir: exit %d, output:\n%s", code, out)
	}
	if _, err := n.Status(); err != nil {
		t.Fatalf("the first daemon was disturbed: %v", err)
	}
}

// TestRefusesUnreadableDataDir: a data directory the daemon's user cannot use is refused
// with the fix named. As root the permission bits do not bind, so the daemon runs as
// nobody there.
func TestRefusesUnreadableDataDir(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 1)
	n := c.Nodes[0]
	if err := os.MkdirAll(n.DataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(n.DataDir, 0o000); err != nil {
		t.Fatal(err)
	}
	defer os.Chmod(n.DataDir, 0o700)
	cmd := exec.Command(filepath.Join(binDir, "pmgclusterd"), n.daemonArgs()...)
	if os.Geteuid() == 0 {
		// nobody must be able to reach the directory's parent and the binary.
		for _, dir := range []string{filepath.Dir(n.DataDir), binDir, filepath.Dir(n.Socket)} {
			_ = os.Chmod(dir, 0o777)
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	}
	out, err := cmd.CombinedOutput()
	if exitCode(err) == 0 || !strings.Contains(string(out), "not accessible") || !strings.Contains(string(out), "permission") {
		t.Fatalf("unreadable data dir: exit %d, output:\n%s", exitCode(err), out)
	}
}

// xorFile garbles every byte of path.
func xorFile(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := range b {
		b[i] ^= 0x5a
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestRefusesCorruptData: a corrupt Raft log or node.json is refused with a message naming
// the file and the way out, and the daemon does not start.
func TestRefusesCorruptData(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		file    string
		corrupt func(t *testing.T, path string)
	}{
		// The write-ahead log (raft/wal): the message names its directory.
		{"wal meta garbage", "raft/wal", func(t *testing.T, path string) {
			xorFile(t, filepath.Join(path, "wal-meta.db"))
		}},
		{"wal segment garbage", "raft/wal", func(t *testing.T, path string) {
			segs, err := filepath.Glob(filepath.Join(path, "*.wal"))
			if err != nil || len(segs) == 0 {
				t.Fatalf("no segment in %s: %v", path, err)
			}
			for _, s := range segs {
				xorFile(t, s)
			}
		}},
		{"node.json garbage", "node.json", func(t *testing.T, path string) {
			if err := os.WriteFile(path, []byte("{not json"), 0o600); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := newCluster(t, 1)
			n := c.Nodes[0]
			n.Start()
			n.CLI("create")
			n.CLI("config", "set", "k", "v")
			n.Stop()
			path := filepath.Join(n.DataDir, tc.file)
			tc.corrupt(t, path)
			out, code := n.RunDaemon(20 * time.Second)
			if code == 0 || !strings.Contains(out, "corrupt") || !strings.Contains(out, path) || !strings.Contains(out, "pmgcm join") {
				t.Fatalf("corrupt %s: exit %d, output:\n%s", tc.file, code, out)
			}
		})
	}
}

// TestRefusesAddressChange: a node started with another --ip than it was set up with is
// refused, since the cluster knows it by its address.
func TestRefusesAddressChange(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 1)
	n := c.Nodes[0]
	n.Start()
	n.CLI("create")
	n.Stop()
	moved := n.Clone()
	moved.IP = testutil.IPs(1)[0]
	out, code := moved.RunDaemon(20 * time.Second)
	if code == 0 || !strings.Contains(out, "cannot change") || !strings.Contains(out, n.IP) {
		t.Fatalf("changed --ip: exit %d, output:\n%s", code, out)
	}
}
