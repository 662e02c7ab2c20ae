package daemon

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/pmgcm/pmgcm/fsm"
)

// newTestExporter is an exporter of dir/export, without a daemon: apply only.
func newTestExporter(t *testing.T) (*exporter, string) {
	t.Helper()
	root := t.TempDir()
	e := &exporter{dir: filepath.Join(root, "export")}
	if err := e.load(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.x.Close() })
	return e, root
}

// TestExportRefusesSymlinks: a link inside the export directory (export/svc ->
// ../elsewhere, made by a service that can write there) never makes the daemon write,
// replace or remove anything outside it: the entry is refused with an error naming
// the link, and the files elsewhere are untouched.
func TestExportRefusesSymlinks(t *testing.T) {
	e, root := newTestExporter(t)
	elsewhere := filepath.Join(root, "elsewhere")
	if err := os.Mkdir(elsewhere, 0o700); err != nil {
		t.Fatal(err)
	}
	victim := filepath.Join(elsewhere, "victim")
	if err := os.WriteFile(victim, []byte("original"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../elsewhere", filepath.Join(e.dir, "svc")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, filepath.Join(e.dir, "file")); err != nil {
		t.Fatal(err)
	}
	cases := []fsm.Change{
		{Key: "svc/victim", Value: []byte("pwned"), Version: 1},   // a linked directory
		{Key: "svc/new/file", Value: []byte("pwned"), Version: 2}, // a directory below a link
		{Key: "file", Value: []byte("pwned"), Version: 3},         // a linked file
		{Key: "svc/victim", Deleted: true, Version: 4},            // removal through a link
		{Key: "file", Deleted: true, Version: 5},                  // removal of a link
	}
	e.m.Files["svc/victim"], e.m.Files["file"] = 1, 3 // as if it had written them
	for _, c := range cases {
		err := e.apply(c)
		if !errors.Is(err, errExportLink) {
			t.Errorf("%+v: %v, want errExportLink", c, err)
		}
	}
	if b, err := os.ReadFile(victim); err != nil || string(b) != "original" {
		t.Fatalf("the file outside the export directory: %q %v", b, err)
	}
	if ents, _ := os.ReadDir(elsewhere); len(ents) != 1 {
		t.Fatalf("files appeared outside the export directory: %v", ents)
	}
	for _, l := range []string{"svc", "file"} {
		if fi, err := os.Lstat(filepath.Join(e.dir, l)); err != nil || fi.Mode().Type() != os.ModeSymlink {
			t.Fatalf("the link %s was replaced: %v", l, err)
		}
	}
	// An old key with a ".." segment (allowed before the ban) is refused as well.
	if err := e.apply(fsm.Change{Key: "a/../../elsewhere/x", Value: []byte("pwned"), Version: 6}); err == nil {
		t.Fatal("a key with .. was exported")
	}
}

// TestExportModes: files are 0640 and the subdirectories the exporter makes are 0750
// whatever the umask, so the files' group can reach them; delete removes the file.
func TestExportModes(t *testing.T) {
	e, _ := newTestExporter(t)
	if err := e.apply(fsm.Change{Key: "etc/postfix/main.cf", Value: []byte("relayhost = x\n"), Version: 1}); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]os.FileMode{
		"etc": 0o750, "etc/postfix": 0o750, "etc/postfix/main.cf": 0o640,
	} {
		fi, err := os.Stat(filepath.Join(e.dir, path))
		if err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: %v %v, want mode %o", path, fi.Mode(), err, want)
		}
	}
	if b, err := os.ReadFile(filepath.Join(e.dir, "etc/postfix/main.cf")); err != nil || string(b) != "relayhost = x\n" {
		t.Fatalf("content %q %v", b, err)
	}
	if err := e.apply(fsm.Change{Key: "etc/postfix/main.cf", Value: []byte("relayhost = y\n"), Version: 2}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(e.dir, "etc/postfix/main.cf")); string(b) != "relayhost = y\n" {
		t.Fatalf("after replace: %q", b)
	}
	if err := e.apply(fsm.Change{Key: "etc/postfix/main.cf", Deleted: true, Version: 3}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(e.dir, "etc/postfix/main.cf")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("after delete: %v", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(e.dir, "etc/postfix")); len(ents) != 0 {
		t.Fatalf("temporary files left: %v", ents)
	}
}

// FuzzExportManifest checks the decoder of the export manifest, a file in a directory
// that the gateway's services may write: load never panics, and a manifest it accepts
// has a file map to fill.
func FuzzExportManifest(f *testing.F) {
	f.Add([]byte(`{"index":7,"files":{"etc/a":3,"etc/b/c":7}}`))
	f.Add([]byte(`{"files":null}`))
	f.Add([]byte(`[]`))
	dir := filepath.Join(f.TempDir(), "export")
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, manifestName), b, 0o640); err != nil {
			t.Fatal(err)
		}
		e := &exporter{dir: dir}
		err := e.load()
		if e.x != nil {
			defer e.x.Close()
		}
		if err == nil && e.m.Files == nil {
			t.Fatal("an accepted manifest without a file map")
		}
	})
}
