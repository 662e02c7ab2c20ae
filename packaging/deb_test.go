package packaging

import (
	"bufio"
	"bytes"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
)

// debVersion is the release name the tests build the package as; debWant is the Debian
// version `make deb` must make of it (native: no hyphen, starts with a digit).
const (
	debVersion = "v1.2.3-4-gabcdef0"
	debWant    = "1.2.3+4+gabcdef0"
)

var deb struct {
	once sync.Once
	path string // the .deb
	err  error
	out  []byte
}

// buildDeb runs `make deb` once for every test of this file and returns the package.
func buildDeb(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binaries: not with -short")
	}
	for _, tool := range []string{"make", "dpkg-deb", "dpkg-shlibdeps", "dpkg-buildflags", "strip"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("no %s: the Debian package is not built (scripts/ci-deps.sh installs dpkg-dev)", tool)
		}
	}
	deb.once.Do(func() {
		dir, err := os.MkdirTemp("", "pmgcm-deb-")
		if err != nil {
			deb.err = err
			return
		}
		cmd := exec.Command("make", "-C", "..", "--no-print-directory", "deb", "DEB_DIR="+dir, "VERSION="+debVersion)
		var stdout bytes.Buffer
		cmd.Stdout = &stdout
		cmd.Stderr = &stdout
		deb.err = cmd.Run()
		deb.out = stdout.Bytes()
		lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
		deb.path = lines[len(lines)-1]
	})
	if deb.err != nil {
		t.Fatalf("make deb: %v\n%s", deb.err, deb.out)
	}
	return deb.path
}

func TestMain(m *testing.M) {
	code := m.Run()
	if deb.path != "" {
		os.RemoveAll(filepath.Dir(deb.path))
	}
	os.Exit(code)
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// The control fields, the file list with modes and owners, and the maintainer scripts.
func TestDebControl(t *testing.T) {
	pkg := buildDeb(t)
	if filepath.Base(pkg) != "pmgcm_"+debWant+"_"+strings.TrimSpace(run(t, "dpkg", "--print-architecture"))+".deb" {
		t.Errorf("package file %s", pkg)
	}
	fields := map[string]string{}
	for _, f := range []string{"Package", "Version", "Architecture", "Maintainer", "Depends", "Section", "Priority", "Installed-Size", "Description"} {
		fields[f] = strings.TrimSpace(run(t, "dpkg-deb", "--field", pkg, f))
		if fields[f] == "" {
			t.Errorf("control field %s missing", f)
		}
	}
	if fields["Package"] != "pmgcm" || fields["Version"] != debWant || fields["Section"] != "admin" {
		t.Errorf("control fields %v", fields)
	}
	if !strings.Contains(fields["Depends"], "libc6 (>= ") {
		t.Errorf("Depends: %q, want libc6 from dpkg-shlibdeps", fields["Depends"])
	}

	ctrl := t.TempDir()
	run(t, "dpkg-deb", "--control", pkg, ctrl)
	if _, err := os.Stat(filepath.Join(ctrl, "conffiles")); err == nil {
		t.Error("the package has conffiles; /etc/pmgcm/pmgclusterd.toml is postinst's to write")
	}
	for _, script := range []string{"postinst", "prerm", "postrm"} {
		p := filepath.Join(ctrl, script)
		fi, err := os.Stat(p)
		if err != nil {
			t.Error(err)
			continue
		}
		if fi.Mode().Perm() != 0o755 {
			t.Errorf("%s: mode %v, want 0755", script, fi.Mode().Perm())
		}
		if out, err := exec.Command("sh", "-n", p).CombinedOutput(); err != nil {
			t.Errorf("sh -n %s: %v\n%s", script, err, out)
		}
		if !strings.HasPrefix(read(t, p), "#!/bin/sh\n") {
			t.Errorf("%s does not start with #!/bin/sh", script)
		}
	}

	// Every file, with its mode and owner as dpkg will install it.
	got := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(run(t, "dpkg-deb", "--contents", pkg)))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 6 || f[0][0] == 'd' {
			continue
		}
		if f[1] != "root/root" {
			t.Errorf("%s owned by %s", f[5], f[1])
		}
		got[strings.TrimPrefix(f[5], ".")] = f[0]
	}
	want := map[string]string{
		"/usr/bin/pmgcm":                                "-rwxr-xr-x",
		"/usr/bin/pmgclusterd":                          "-rwxr-xr-x",
		"/lib/systemd/system/pmgclusterd.service":       "-rw-r--r--",
		"/usr/share/man/man1/pmgcm.1.gz":                "-rw-r--r--",
		"/usr/share/man/man1/pmgcm-join.1.gz":           "-rw-r--r--",
		"/usr/share/man/man8/pmgclusterd.8.gz":          "-rw-r--r--",
		"/usr/share/bash-completion/completions/pmgcm":  "-rw-r--r--",
		"/usr/share/zsh/vendor-completions/_pmgcm":      "-rw-r--r--",
		"/usr/share/pmgcm/pmgclusterd.toml":             "-rw-r--r--",
		"/usr/share/pmgcm/prometheus/pmgcm-alerts.yml":  "-rw-r--r--",
		"/usr/share/pmgcm/grafana/pmgcm-dashboard.json": "-rw-r--r--",
		"/usr/share/doc/pmgcm/copyright":                "-rw-r--r--",
		"/usr/share/doc/pmgcm/changelog.gz":             "-rw-r--r--",
		"/usr/share/doc/pmgcm/pmgclusterd.toml":         "lrwxrwxrwx",
		"/usr/share/lintian/overrides/pmgcm":            "-rw-r--r--",
	}
	for path, mode := range want {
		if got[path] != mode {
			t.Errorf("%s: %q, want %q", path, got[path], mode)
		}
	}
	for path := range got {
		switch {
		case strings.HasPrefix(path, "/etc/"), strings.HasPrefix(path, "/var/"), strings.HasPrefix(path, "/run/"):
			t.Errorf("%s: the package ships a file where the admin or the daemon writes", path)
		case strings.HasPrefix(path, "/usr/share/man/") && !strings.HasSuffix(path, ".gz"):
			t.Errorf("%s: man page not compressed", path)
		}
	}
}

// The files themselves: the binaries run and are stripped, md5sums match, the unit waits
// for the config, the copyright names the modules linked in.
func TestDebFiles(t *testing.T) {
	pkg := buildDeb(t)
	root := t.TempDir()
	run(t, "dpkg-deb", "--extract", pkg, root)
	ctrl := t.TempDir()
	run(t, "dpkg-deb", "--control", pkg, ctrl)
	cmd := exec.Command("md5sum", "--check", "--quiet", filepath.Join(ctrl, "md5sums"))
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("md5sums: %v\n%s", err, out)
	}

	for _, bin := range []string{"pmgcm", "pmgclusterd"} {
		p := filepath.Join(root, "usr/bin", bin)
		f, err := elf.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		if f.Section(".symtab") != nil {
			t.Errorf("%s is not stripped", bin)
		}
		if f.Type != elf.ET_DYN {
			t.Errorf("%s is not position-independent (ELF type %v)", bin, f.Type)
		}
		f.Close()
	}
	if out, err := exec.Command(filepath.Join(root, "usr/bin/pmgcm"), "--version").CombinedOutput(); err != nil || !strings.HasPrefix(string(out), "pmgcm ") {
		t.Errorf("pmgcm --version: %v, %q", err, out)
	}
	unit := read(t, filepath.Join(root, "lib/systemd/system/pmgclusterd.service"))
	for _, line := range []string{"ExecStart=/usr/bin/pmgclusterd --config /etc/pmgcm/pmgclusterd.toml", "ConditionPathExists=/etc/pmgcm/pmgclusterd.toml"} {
		if !strings.Contains(unit, "\n"+line+"\n") {
			t.Errorf("unit lacks %q", line)
		}
	}
	if read(t, filepath.Join(root, "usr/share/pmgcm/pmgclusterd.toml")) != read(t, "pmgclusterd.toml") {
		t.Error("the config template differs from packaging/pmgclusterd.toml")
	}
	copyright := read(t, filepath.Join(root, "usr/share/doc/pmgcm/copyright"))
	for _, mod := range []string{"Go standard library", "github.com/hashicorp/raft v", "github.com/BurntSushi/toml v", "Mozilla Public License 2.0: /usr/share/common-licenses/MPL-2.0"} {
		if !strings.Contains(copyright, mod) {
			t.Errorf("copyright does not name %q", mod)
		}
	}
	if strings.Contains(copyright, "No license file") {
		t.Error("copyright: a linked module's license was not found")
	}
	changelog := run(t, "zcat", filepath.Join(root, "usr/share/doc/pmgcm/changelog.gz"))
	if !strings.HasPrefix(changelog, "pmgcm ("+debWant+") unstable; urgency=medium\n") {
		t.Errorf("changelog:\n%s", changelog)
	}
}

// lintian finds no error and no warning (its info tags are explained in
// packaging/debian/lintian-overrides or accepted).
func TestDebLintian(t *testing.T) {
	pkg := buildDeb(t)
	if _, err := exec.LookPath("lintian"); err != nil {
		t.Skip("no lintian: package not checked (scripts/ci-deps.sh installs it)")
	}
	out, err := exec.Command("lintian", "--fail-on", "error,warning", pkg).CombinedOutput()
	if err != nil {
		t.Errorf("lintian: %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "E: ") || strings.HasPrefix(line, "W: ") {
			t.Errorf("lintian: %s", line)
		}
	}
}

// dpkg installs the package into a scratch root (its maintainer scripts run outside a
// chroot, on DPKG_ROOT), writes the config from the host's address, and purges it
// without a trace. hostname and ip are stand-ins on PATH, so both answers are tried.
func TestDebInstallPurge(t *testing.T) {
	pkg := buildDeb(t)
	if _, err := exec.LookPath("dpkg"); err != nil {
		t.Skip("no dpkg")
	}
	if os.Geteuid() != 0 {
		t.Skip("not root: dpkg --root needs to set owners; checked with dpkg-deb only")
	}
	const template = `ip = "192.0.2.10"`
	for _, tc := range []struct {
		name, resolves, want string
	}{
		{"one address", "127.0.1.1 192.0.2.77", `ip = "192.0.2.77"`},
		{"loopback only", "127.0.1.1", ""},
		{"address not on an interface", "198.51.100.9", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root, fake := t.TempDir(), t.TempDir()
			for _, d := range []string{"var/lib/dpkg/info", "var/lib/dpkg/updates"} {
				if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.WriteFile(filepath.Join(root, "var/lib/dpkg/status"), nil, 0o644); err != nil {
				t.Fatal(err)
			}
			script := map[string]string{
				"hostname": "#!/bin/sh\necho '" + tc.resolves + "'\n",
				"ip":       "#!/bin/sh\necho '2: eth0    inet 192.0.2.77/24 brd 192.0.2.255 scope global eth0'\n",
			}
			for name, text := range script {
				if err := os.WriteFile(filepath.Join(fake, name), []byte(text), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			dpkg := func(args ...string) string {
				t.Helper()
				cmd := exec.Command("dpkg", append([]string{"--root=" + root, "--force-script-chrootless", "--force-depends", "--log=/dev/null"}, args...)...)
				cmd.Env = append(os.Environ(), "PATH="+fake+":/usr/sbin:/usr/bin:/sbin:/bin")
				out, err := cmd.CombinedOutput()
				if err != nil {
					t.Fatalf("dpkg %v: %v\n%s", args, err, out)
				}
				return string(out)
			}
			out := dpkg("--install", pkg)
			conf := filepath.Join(root, "etc/pmgcm/pmgclusterd.toml")
			if tc.want == "" {
				if _, err := os.Stat(conf); err == nil {
					t.Errorf("postinst wrote %s though the host's address is not known", conf)
				}
				if !strings.Contains(out, "not written") {
					t.Errorf("postinst does not say why there is no config:\n%s", out)
				}
			} else {
				got := read(t, conf)
				if strings.Replace(read(t, "pmgclusterd.toml"), template, tc.want, 1) != got {
					t.Errorf("config postinst wrote:\n%s", got)
				}
			}
			// An upgrade (here: the same version again) leaves the config as the operator
			// has it, and does not write one where there was none.
			edited := ""
			if tc.want != "" {
				edited = read(t, conf) + "smtp-port = 25\n"
				if err := os.WriteFile(conf, []byte(edited), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			dpkg("--install", pkg)
			if got, err := os.ReadFile(conf); string(got) != edited || (err == nil) != (edited != "") {
				t.Errorf("after the upgrade, config %q (%v), want %q", got, err, edited)
			}
			if _, err := os.Stat(filepath.Join(root, "usr/bin/pmgclusterd")); err != nil {
				t.Error(err)
			}
			if st := dpkg("--status", "pmgcm"); !strings.Contains(st, "Status: install ok installed") {
				t.Errorf("dpkg --status:\n%s", st)
			}

			// What the daemon leaves behind, which purge removes too.
			for _, d := range []string{"var/lib/pmgcm/raft", "run/pmgcm"} {
				if err := os.MkdirAll(filepath.Join(root, d), 0o700); err != nil {
					t.Fatal(err)
				}
			}
			dpkg("--purge", "pmgcm")
			var left []string
			filepath.Walk(root, func(path string, fi os.FileInfo, err error) error {
				rel, _ := filepath.Rel(root, path)
				switch {
				case err != nil || rel == "." || rel == "var/lib/dpkg" || strings.HasPrefix(rel, "var/lib/dpkg/"):
				case !fi.IsDir(), strings.Contains(filepath.Base(rel), "pmgc"):
					// dpkg leaves the empty directories it made on the way (usr/share/...).
					left = append(left, rel)
				}
				return err
			})
			sort.Strings(left)
			if len(left) != 0 {
				t.Errorf("left after purge: %v", left)
			}
		})
	}
}

// The package version from a release name, and from a bare commit hash (git describe
// --always before the first tag), which gets the commit's date so that builds sort.
func TestDebVersion(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("no git")
	}
	hash := strings.TrimSpace(run(t, "git", "rev-parse", "--short", "HEAD"))
	for _, tc := range []struct{ in, want string }{
		{"v1.2.3", "1.2.3"},
		{"v1.2.3-4-gabcdef0", "1.2.3+4+gabcdef0"},
		{"1.3.0-rc1", "1.3.0+rc1"},
		{"20261201", "20261201"},
		{"dev", "0~dev"},
		{"1.0_beta/2", "1.0.beta.2"},
		{"abcdef0", "0~git"},
		{"abcdef0-dirty", "0~git"},
	} {
		cmd := exec.Command("../scripts/mkdeb.sh", "--print-version")
		cmd.Env = append(os.Environ(), "VERSION="+tc.in)
		out, err := cmd.CombinedOutput()
		got := strings.TrimSpace(string(out))
		if err != nil {
			t.Fatalf("mkdeb.sh --print-version: %v\n%s", err, out)
		}
		if tc.want == "0~git" {
			if !regexp.MustCompile(`^0~git[0-9]{8}\.` + hash + `(\+dirty)?$`).MatchString(got) {
				t.Errorf("VERSION=%s: %q, want 0~gitYYYYMMDD.%s", tc.in, got, hash)
			}
		} else if got != tc.want {
			t.Errorf("VERSION=%s: %q, want %q", tc.in, got, tc.want)
		}
	}
}
