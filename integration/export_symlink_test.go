package integration

import (
	"errors"
	"fmt"
	"github.com/pmgcm/pmgcm/internal/testutil"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestConfigExportRefusesSymlinks: a symbolic link in the export directory (export/svc
// -> ../elsewhere, which a service that can write there could make) never makes the
// daemon write outside it: the entry is refused with a log line naming the link, the
// directory it points to stays empty, and the other entries are exported as usual, in
// subdirectories of mode 0750.
func TestConfigExportRefusesSymlinks(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 1)
	n := c.Nodes[0]
	root := t.TempDir()
	export, elsewhere := filepath.Join(root, "export"), filepath.Join(root, "elsewhere")
	for _, d := range []string{export, elsewhere} {
		if err := os.Mkdir(d, 0o750); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("../elsewhere", filepath.Join(export, "svc")); err != nil {
		t.Fatal(err)
	}
	n.ExtraArgs = []string{"--config-export-dir", export}
	n.Start()
	n.CLI("config", "set", "svc/victim", "pwned")
	n.CLI("config", "set", "etc/postfix/main.cf", "relayhost = x\n")
	good := filepath.Join(export, "etc", "postfix", "main.cf")
	testutil.Poll(t, "the other entry exported and the link refused in the log", 15*time.Second, func() error {
		if b, err := os.ReadFile(good); err != nil || string(b) != "relayhost = x\n" {
			return fmt.Errorf("%s: %q %v", good, b, err)
		}
		if !strings.Contains(n.Log(), filepath.Join(export, "svc")+" is a symbolic link") {
			return errors.New("no log line about the link")
		}
		return nil
	})
	if ents, err := os.ReadDir(elsewhere); err != nil || len(ents) != 0 {
		t.Fatalf("the daemon wrote outside the export directory: %v %v", ents, err)
	}
	for _, d := range []string{"etc", "etc/postfix"} {
		if fi, err := os.Stat(filepath.Join(export, d)); err != nil || fi.Mode().Perm() != 0o750 {
			t.Errorf("%s: %v %v, want mode 0750", d, fi.Mode(), err)
		}
	}
}
