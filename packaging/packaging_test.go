package packaging

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

// install runs `make install` of the repository into a fresh DESTDIR and returns it.
func install(t *testing.T, prefix string) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binaries: not with -short")
	}
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("no make")
	}
	dest, bin := t.TempDir(), t.TempDir()
	cmd := exec.Command("make", "-C", "..", "install", "DESTDIR="+dest, "PREFIX="+prefix, "BIN="+bin)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make install: %v\n%s", err, out)
	}
	return dest
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestInstallTree(t *testing.T) {
	dest := install(t, "/usr")
	usr := filepath.Join(dest, "usr")

	// Everything under PREFIX, nothing elsewhere (no /etc file an upgrade would clobber).
	if top, _ := os.ReadDir(dest); len(top) != 1 || top[0].Name() != "usr" {
		t.Errorf("DESTDIR holds %v, want only usr/", top)
	}
	want := map[string]os.FileMode{
		"bin/pmgcm":                               0o755,
		"bin/pmgclusterd":                         0o755,
		"lib/systemd/system/pmgclusterd.service":  0o644,
		"share/man/man1/pmgcm.1":                  0o644,
		"share/man/man1/pmgcm-join.1":             0o644,
		"share/man/man1/pmgcm-status.1":           0o644,
		"share/man/man1/pmgcm-config-set.1":       0o644,
		"share/man/man1/pmgcm-backup.1":           0o644,
		"share/man/man8/pmgclusterd.8":            0o644,
		"share/bash-completion/completions/pmgcm": 0o644,
		"share/zsh/site-functions/_pmgcm":         0o644,
		"share/doc/pmgcm/pmgclusterd.toml":        0o644,
	}
	for rel, mode := range want {
		fi, err := os.Stat(filepath.Join(usr, rel))
		if err != nil {
			t.Errorf("not installed: %v", err)
			continue
		}
		if fi.Mode().Perm() != mode || fi.Size() == 0 {
			t.Errorf("%s: mode %v, %d bytes; want %v, not empty", rel, fi.Mode().Perm(), fi.Size(), mode)
		}
	}
	if !strings.Contains(read(t, filepath.Join(usr, "share/bash-completion/completions/pmgcm")), "__start_pmgcm") {
		t.Error("bash completion is not pmgcm's")
	}
	if !strings.HasPrefix(read(t, filepath.Join(usr, "share/zsh/site-functions/_pmgcm")), "#compdef pmgcm") {
		t.Error("zsh completion does not start with #compdef pmgcm")
	}

	// The installed binaries run; the example config is one that pmgclusterd reads, and it
	// names every setting there is.
	if out, err := exec.Command(filepath.Join(usr, "bin/pmgcm"), "--version").CombinedOutput(); err != nil || !strings.HasPrefix(string(out), "pmgcm ") {
		t.Errorf("pmgcm --version: %v, %q", err, out)
	}
	example := filepath.Join(usr, "share/doc/pmgcm/pmgclusterd.toml")
	var stderr bytes.Buffer
	cmd := exec.Command(filepath.Join(usr, "bin/pmgclusterd"), "--config", example, "--print-config")
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("pmgclusterd --config example --print-config: %v\n%s", err, stderr.String())
	}
	var settings map[string]any
	if _, err := toml.Decode(string(out), &settings); err != nil {
		t.Fatal(err)
	}
	if settings["data-dir"] != "/var/lib/pmgcm" || settings["socket"] != "/run/pmgcm/pmgcm.sock" {
		t.Errorf("example config: data-dir %v, socket %v; want the unit's state and runtime directories", settings["data-dir"], settings["socket"])
	}
	text := read(t, example)
	for key := range settings {
		if !strings.Contains(text, "\n"+key+" = ") && !strings.Contains(text, "\n# "+key+" = ") {
			t.Errorf("example config does not show the setting %s", key)
		}
	}
}

func TestUnit(t *testing.T) {
	dest := install(t, "/usr")
	unit := filepath.Join(dest, "usr/lib/systemd/system/pmgclusterd.service")
	text := read(t, unit)
	for _, line := range []string{
		"Type=simple",
		"ExecStart=/usr/bin/pmgclusterd --config /etc/pmgcm/pmgclusterd.toml",
		"Restart=on-failure",
		"StateDirectory=pmgcm",
		"RuntimeDirectory=pmgcm",
		"ReadWritePaths=/var/lib/pmgcm",
		"ProtectSystem=strict",
		"ProtectHome=yes",
		"PrivateTmp=yes",
		"NoNewPrivileges=yes",
		"LimitNOFILE=",
		"WantedBy=multi-user.target",
	} {
		if !strings.Contains("\n"+text, "\n"+line) {
			t.Errorf("unit lacks %q", line)
		}
	}

	// systemd's own check, on a copy that starts the binary just installed.
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("no systemd-analyze: unit not verified")
	}
	copied := filepath.Join(t.TempDir(), "pmgclusterd.service")
	text = strings.ReplaceAll(text, "/usr/bin/pmgclusterd", filepath.Join(dest, "usr/bin/pmgclusterd"))
	if err := os.WriteFile(copied, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("systemd-analyze", "verify", "--man=no", copied).CombinedOutput()
	// It warns, with exit status 0, of unknown keys and bad values: those fail too.
	if err != nil || len(bytes.TrimSpace(out)) != 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

func TestInstallPrefix(t *testing.T) {
	dest := install(t, "/usr/local")
	unit := read(t, filepath.Join(dest, "usr/local/lib/systemd/system/pmgclusterd.service"))
	if !strings.Contains(unit, "\nExecStart=/usr/local/bin/pmgclusterd --config") {
		t.Errorf("unit does not start the binary under the prefix:\n%s", unit)
	}
	for _, rel := range []string{"bin/pmgclusterd", "share/man/man8/pmgclusterd.8"} {
		if _, err := os.Stat(filepath.Join(dest, "usr/local", rel)); err != nil {
			t.Error(err)
		}
	}
}
