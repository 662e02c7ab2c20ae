package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSocketOnRegularFileRefused: --socket pointing at an existing regular file (a typo
// such as --socket /etc/pmgcm/pmgclusterd.toml) makes the daemon refuse to start with a
// message naming the file, and the file survives byte for byte. A stale socket left by a
// killed daemon is still cleared.
func TestSocketOnRegularFileRefused(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 1)
	n := c.Nodes[0]
	conf := filepath.Join(t.TempDir(), "pmgclusterd.toml")
	const content = "# the operator's configuration\nip = \"127.0.0.1\"\n"
	if err := os.WriteFile(conf, []byte(content), 0o640); err != nil {
		t.Fatal(err)
	}
	n.Socket = conf
	out, code := n.RunDaemon(30 * time.Second)
	if code == 0 || !strings.Contains(out, conf) || !strings.Contains(out, "is a regular file") || !strings.Contains(out, "not a socket") {
		t.Fatalf("daemon with --socket on a regular file: exit %d, output:\n%s", code, out)
	}
	if b, err := os.ReadFile(conf); err != nil || string(b) != content {
		t.Fatalf("the file at --socket was changed: %q %v", b, err)
	}

	// A killed daemon leaves its socket behind: the next start clears it.
	n.Socket = filepath.Join(filepath.Dir(conf), "pmgcm.sock")
	n.Start()
	n.Kill()
	if fi, err := os.Lstat(n.Socket); err != nil || fi.Mode().Type() != os.ModeSocket {
		t.Fatalf("no stale socket after kill -9: %v", err)
	}
	n.Start()
	if _, err := n.Status(); err != nil {
		t.Fatalf("daemon after a stale socket: %v", err)
	}
}
