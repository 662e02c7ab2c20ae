package command

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"

	"github.com/pmgcm/pmgcm/raftnode"
)

// writeFile writes content to a file in a temporary directory and returns its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// runCmd runs pmgclusterd with args and returns its exit code, stdout and stderr.
func runCmd(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestConfigFileErrors(t *testing.T) {
	cases := []struct {
		name    string
		content string
		// line is where the (first) error is; want is a part of its text.
		line int
		want string
	}{
		{name: "unknown key", content: "ip = \"127.0.0.1\"\n\nprot = 8006\n", line: 3, want: `unknown setting "prot"`},
		{name: "hidden flag is no setting", content: "fault-injection = true\n", line: 1, want: `unknown setting "fault-injection"`},
		{name: "config is no setting", content: "# comment\nconfig = \"/etc/x.toml\"\n", line: 2, want: `unknown setting "config"`},
		{name: "unknown table", content: "port = 8006\n[raft]\nheartbeat-timeout = \"1s\"\n", line: 2, want: `unknown setting "raft"`},
		{name: "unknown dotted key", content: "\nraft.heartbeat = \"1s\"\n", line: 2, want: `unknown setting "raft"`},
		{name: "string for integer", content: "data-dir = \"/d\"\nport = \"8006\"\n", line: 2, want: "port: want an integer, got a string"},
		{name: "integer for string", content: "ip = 127\n", line: 1, want: "ip: want a string, got an integer"},
		{name: "string for boolean", content: "\n\n\nlog-json = \"yes\"\n", line: 4, want: "log-json: want a boolean"},
		{name: "integer for duration", content: "raft-heartbeat-timeout = 500\n", line: 1, want: "raft-heartbeat-timeout: want a duration string"},
		{name: "bad duration", content: "port = 8006\nraft-election-timeout = \"5 parsecs\"\n", line: 2, want: `raft-election-timeout: bad value "5 parsecs"`},
		{name: "string for list", content: "config-export-prefix = \"pmg/\"\n", line: 1, want: "config-export-prefix: want an array of strings"},
		{name: "integer in list", content: "config-export-prefix = [\"pmg/\", 7]\n", line: 1, want: "got an array holding an integer"},
		{name: "table for integer", content: "ip = \"127.0.0.1\"\n[port]\nx = 1\n", line: 2, want: "port: want an integer, got a table"},
		{name: "dotted key under a setting", content: "ip = \"127.0.0.1\"\n\nport.number = 1\n", line: 3, want: "port: want an integer, got a table"},
		{name: "negative unsigned", content: "raft-trailing-logs = -1\n", line: 1, want: `raft-trailing-logs: bad value "-1"`},
		{name: "bad syntax", content: "ip = \"127.0.0.1\"\nport = = 8006\n", line: 2, want: "not valid TOML"},
		{name: "unterminated string", content: "\nname = \"node1\n", line: 2, want: "not valid TOML"},
		{name: "duplicate key", content: "port = 1\nport = 2\n", line: 2, want: "not valid TOML"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, "pmgclusterd.toml", tc.content)
			code, out, stderr := runCmd(t, "--config", path, "--print-config")
			if code != 1 || out != "" {
				t.Fatalf("exit %d, stdout %q, stderr %q", code, out, stderr)
			}
			prefix := fmt.Sprintf("pmgclusterd: %s:%d: ", path, tc.line)
			if !strings.HasPrefix(stderr, prefix) || !strings.Contains(stderr, tc.want) {
				t.Errorf("stderr %q, want it to start with %q and hold %q", stderr, prefix, tc.want)
			}
		})
	}
}

func TestConfigFileReportsEveryBadKey(t *testing.T) {
	path := writeFile(t, "c.toml", "port = \"x\"\nip = \"127.0.0.1\"\nnope = 1\n")
	cmd := New(&bytes.Buffer{})
	err := LoadConfigFile(cmd.Flags(), path)
	var lines []int
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var fe *FileError
		if !errors.As(e, &fe) || fe.File != path {
			t.Fatalf("error %v is not a *FileError of %s", e, path)
		}
		lines = append(lines, fe.Line)
	}
	if fmt.Sprint(lines) != "[1 3]" {
		t.Errorf("error lines %v, want [1 3]; error: %v", lines, err)
	}
}

func TestConfigFileMissing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "absent.toml")
	code, _, stderr := runCmd(t, "--config", path)
	if code != 1 || !strings.Contains(stderr, path) || !strings.Contains(stderr, "no such file") {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
}

// printed runs pmgclusterd --print-config with args and decodes what it prints.
func printed(t *testing.T, args ...string) (string, map[string]any) {
	t.Helper()
	code, out, stderr := runCmd(t, append(args, "--print-config")...)
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	var m map[string]any
	if _, err := toml.Decode(out, &m); err != nil {
		t.Fatalf("--print-config printed bad TOML: %v\n%s", err, out)
	}
	return out, m
}

func TestFlagsOverrideConfigFile(t *testing.T) {
	path := writeFile(t, "c.toml", `
data-dir = "/var/lib/pmgcm"
ip = "192.168.2.127"
port = 8007
name = "from-file"
raft-heartbeat-timeout = "2s"
config-export-prefix = ["pmg/", "spam/"]
log-json = true
`)
	_, m := printed(t, "--port", "9000", "--config", path, "--config-export-prefix", "only/", "--log-json=false")
	want := map[string]any{
		"data-dir": "/var/lib/pmgcm", "ip": "192.168.2.127", "name": "from-file", "raft-heartbeat-timeout": "2s",
		"port": int64(9000), "config-export-prefix": []any{"only/"}, "log-json": false,
		"socket": "/run/pmgcm/pmgcm.sock", "raft-election-timeout": raftnode.DefaultConfig().ElectionTimeout.String(),
	}
	for k, v := range want {
		if fmt.Sprint(m[k]) != fmt.Sprint(v) {
			t.Errorf("%s = %#v, want %#v", k, m[k], v)
		}
	}
	for _, k := range []string{"config", "print-config", "help", "fault-injection", "protocol-version"} {
		if _, ok := m[k]; ok {
			t.Errorf("--print-config prints %q, which is no setting", k)
		}
	}
}

func TestPrintConfigRoundTrip(t *testing.T) {
	out1, m := printed(t, "--data-dir", "/d", "--ip", "10.0.0.1", "--name", "n1", "--smtp-port", "2525",
		"--raft-snapshot-threshold", "100", "--raft-election-timeout", "1.5s", "--log-level", "debug",
		"--config-export-dir", `/etc/pmg "quoted"`, "--config-export-prefix", "a/,b/", "--log-json")
	if m["smtp-port"] != int64(2525) || m["config-export-dir"] != `/etc/pmg "quoted"` {
		t.Fatalf("printed %v", m)
	}
	// Every setting is printed, with its usage as a comment.
	cmd := New(&bytes.Buffer{})
	n := 0
	for _, name := range []string{"data-dir", "ip", "port", "name", "socket", "smtp-port", "config-export-dir",
		"config-export-prefix", "raft-heartbeat-timeout", "raft-election-timeout", "raft-leader-lease-timeout",
		"raft-snapshot-threshold", "raft-snapshot-interval", "raft-trailing-logs", "log-level", "log-json"} {
		if _, ok := m[name]; !ok {
			t.Errorf("%s not printed", name)
		}
		if f := cmd.Flags().Lookup(name); f == nil || !strings.Contains(out1, "# "+f.Usage+"\n"+name+" = ") {
			t.Errorf("%s not printed under its usage", name)
		}
		n++
	}
	if len(m) < n {
		t.Errorf("printed %d settings, want at least %d", len(m), n)
	}
	// Fed back, the file gives the same settings.
	path := writeFile(t, "printed.toml", out1)
	out2, _ := printed(t, "--config", path)
	if out2 != out1 {
		t.Errorf("round trip differs:\n--- first:\n%s\n--- second:\n%s", out1, out2)
	}
}

func TestConfigFileReachesDaemon(t *testing.T) {
	// The daemon's validation sees the file's settings; nothing is opened when it fails.
	cases := []struct{ content, want string }{
		{`ip = "127.0.0.1"`, "--data-dir is required"},
		{"data-dir = \"" + t.TempDir() + "\"\n", "--ip is required"},
		{"data-dir = \"" + t.TempDir() + "\"\nip = \"0.0.0.0\"\n", "--ip 0.0.0.0 is not a usable address"},
		{"data-dir = \"" + t.TempDir() + "\"\nip = \"127.0.0.1\"\nlog-level = \"loud\"\n", `--log-level "loud"`},
	}
	for _, tc := range cases {
		path := writeFile(t, "c.toml", tc.content)
		code, _, stderr := runCmd(t, "--config", path)
		if code != 1 || !strings.Contains(stderr, tc.want) {
			t.Errorf("%q: exit %d, stderr %q, want %q", tc.content, code, stderr, tc.want)
		}
	}
}
