package daemon

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestClearStaleSocket: only a socket that nobody answers on is removed; a regular file
// (a mistyped --socket such as the configuration file), a directory or a symbolic link
// at the path is refused with an error naming it, and left untouched.
func TestClearStaleSocket(t *testing.T) {
	dir := t.TempDir()
	if err := clearStaleSocket(filepath.Join(dir, "none.sock")); err != nil {
		t.Fatalf("no file: %v", err)
	}

	conf := filepath.Join(dir, "pmgclusterd.toml")
	if err := os.WriteFile(conf, []byte("ip = \"127.0.0.1\"\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(dir, "subdir")
	if err := os.Mkdir(sub, 0o750); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.sock")
	if err := os.Symlink(conf, link); err != nil {
		t.Fatal(err)
	}
	for path, kind := range map[string]string{conf: "a regular file", sub: "a directory", link: "a symbolic link"} {
		err := clearStaleSocket(path)
		if !errors.Is(err, ErrSocketPath) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), kind) {
			t.Errorf("%s: %v, want ErrSocketPath naming it as %s", path, err, kind)
		}
		if _, err := os.Lstat(path); err != nil {
			t.Errorf("%s was removed: %v", path, err)
		}
	}
	if b, err := os.ReadFile(conf); err != nil || string(b) != "ip = \"127.0.0.1\"\n" {
		t.Fatalf("the regular file changed: %q %v", b, err)
	}

	// A live socket is refused; once nobody answers on it, it is removed.
	sock := filepath.Join(dir, "pmgcm.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	if err := clearStaleSocket(sock); !errors.Is(err, ErrSocketInUse) {
		t.Fatalf("live socket: %v, want ErrSocketInUse", err)
	}
	_ = ln.Close()
	if _, err := os.Lstat(sock); err != nil {
		t.Fatalf("the stale socket is not there to clear: %v", err)
	}
	if err := clearStaleSocket(sock); err != nil {
		t.Fatalf("stale socket: %v", err)
	}
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stale socket not removed: %v", err)
	}
}
