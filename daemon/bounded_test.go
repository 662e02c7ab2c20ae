package daemon

import (
	"bytes"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

// TestDataFilesBounded: node.json, peers.json and the TLS files over their bounds are
// refused as corrupt, without being read whole; files at the bound are read.
func TestDataFilesBounded(t *testing.T) {
	dir := t.TempDir()
	d := &dataDir{path: dir}
	big := func(name string, n int64) {
		t.Helper()
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			t.Fatal(err)
		}
		// A valid JSON prefix, then padding: a reader with no bound would decode it.
		b := append([]byte(`{"format":1,"name":"n","ip":"127.0.0.1","port":8006,"cid":1}`), bytes.Repeat([]byte(" "), int(n))...)
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}

	big("node.json", maxNodeFileBytes)
	if _, _, err := d.readNodeFile(); !tooLarge(err) {
		t.Errorf("node.json over %d bytes: %v, want ErrCorruptData (too large)", maxNodeFileBytes, err)
	}
	big("node.json", 0)
	if _, ok, err := d.readNodeFile(); err != nil || !ok {
		t.Errorf("a small node.json: ok %v, %v", ok, err)
	}

	dm := &Daemon{dir: d, logger: hclog.NewNullLogger()}
	big("peers.json", maxPeersFileBytes)
	if err := dm.loadPeers(); !tooLarge(err) {
		t.Errorf("peers.json over %d bytes: %v, want ErrCorruptData (too large)", maxPeersFileBytes, err)
	}

	for _, name := range []string{keyFile, certFile, caFile} {
		sub := t.TempDir()
		sd := &dataDir{path: sub}
		if _, _, err := sd.loadIdentity("n", net.ParseIP("127.0.0.1")); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(sd.file("tls", caFile), []byte{}, 0o644); err != nil {
			t.Fatal(err)
		}
		f, err := os.OpenFile(sd.file("tls", name), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(bytes.Repeat([]byte("\n"), maxTLSFileBytes+1)); err != nil {
			t.Fatal(err)
		}
		f.Close()
		if _, _, err := sd.loadIdentity("n", net.ParseIP("127.0.0.1")); !tooLarge(err) {
			t.Errorf("tls/%s over %d bytes: %v, want ErrCorruptData (too large)", name, maxTLSFileBytes, err)
		}
	}
}

// tooLarge reports whether err is the refusal of a file over its bound (corrupt() keeps
// only the cause's text).
func tooLarge(err error) bool {
	return errors.Is(err, ErrCorruptData) && strings.Contains(err.Error(), errFileTooLarge.Error())
}
