package cli

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/api/client"
	"github.com/pmgcm/pmgcm/api/client/clienttest"
)

// binaryValue is not valid UTF-8 and has no trailing newline; clienttest.Daemon serves it.
var binaryValue = clienttest.BinaryValue

func TestConfigGetByteExact(t *testing.T) {
	for _, v := range [][]byte{binaryValue, []byte("line\n"), {}, []byte("no newline")} {
		f := &fakeAPI{value: v, ver: 7}
		r := runFake(t, f, "", "config", "get", "mail/relay")
		if r.code != ExitOK || r.stderr != "" {
			t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
		}
		if !bytes.Equal([]byte(r.stdout), v) {
			t.Errorf("stdout = %q, want %q byte-exact", r.stdout, v)
		}
		if f.gotKey != "mail/relay" {
			t.Errorf("key = %q", f.gotKey)
		}
	}
}

func TestConfigGetJSON(t *testing.T) {
	r := runFake(t, &fakeAPI{value: binaryValue, ver: 7}, "", "config", "get", "k", "-o", "json")
	var e api.ConfigEntry
	if err := json.Unmarshal([]byte(r.stdout), &e); err != nil || r.code != ExitOK {
		t.Fatalf("exit %d, %v: %q", r.code, err, r.stdout)
	}
	if e.Key != "k" || e.Version != 7 || e.Size != len(binaryValue) || e.Value != nil || e.ValueBase64 != "AP/+CmGADQ==" {
		t.Errorf("binary entry = %+v", e)
	}

	r = runFake(t, &fakeAPI{value: []byte("<héllo>"), ver: 9}, "", "config", "get", "k", "-o", "json")
	want := "{\n  \"key\": \"k\",\n  \"version\": 9,\n  \"size\": 8,\n  \"value\": \"<héllo>\"\n}\n"
	if r.stdout != want {
		t.Errorf("text entry = %q, want %q", r.stdout, want)
	}
}

func TestConfigSet(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "value.bin")
	if err := os.WriteFile(file, binaryValue, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		stdin string
		args  []string
		want  []byte
	}{
		{"value argument", "", []string{"k", "v 1"}, []byte("v 1")},
		{"empty value", "", []string{"k", ""}, []byte{}},
		{"from file", "", []string{"k", "--file", file}, binaryValue},
		{"from stdin", string(binaryValue), []string{"k", "--file", "-"}, binaryValue},
		{"flag first", "", []string{"--file", file, "k"}, binaryValue},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeAPI{write: &api.WriteResponse{Key: "k", Version: 42}}
			r := runFake(t, f, tt.stdin, append([]string{"config", "set"}, tt.args...)...)
			if r.code != ExitOK || r.stdout != "k version 42\n" || r.stderr != "" {
				t.Fatalf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
			}
			if f.gotKey != "k" || !bytes.Equal(f.gotValue, tt.want) {
				t.Errorf("sent %q=%q, want %q", f.gotKey, f.gotValue, tt.want)
			}
		})
	}
}

func TestConfigSetMissingFile(t *testing.T) {
	f := &fakeAPI{write: &api.WriteResponse{Key: "k", Version: 1}}
	r := runFake(t, f, "", "config", "set", "k", "--file", filepath.Join(t.TempDir(), "nope"))
	if r.code != ExitError || !strings.HasPrefix(r.stderr, "pmgcm: reading value: ") || len(f.calls) != 0 {
		t.Errorf("exit %d, stderr %q, calls %v", r.code, r.stderr, f.calls)
	}
}

func TestConfigList(t *testing.T) {
	s := "x"
	list := &api.ConfigList{Entries: []api.ConfigEntry{
		{Key: "mail/relay", Version: 12, Size: 11, Value: &s},
		{Key: "spam/level", Version: 3, Size: 1024},
		{Key: "odd\tkey", Version: 4, Size: 0},
	}}
	f := &fakeAPI{list: list}
	r := runFake(t, f, "", "config", "list", "mail/")
	if r.code != ExitOK || f.gotPref != "mail/" {
		t.Fatalf("exit %d, prefix %q, stderr %q", r.code, f.gotPref, r.stderr)
	}
	golden(t, "config_list.golden", r.stdout)

	r = runFake(t, &fakeAPI{list: list}, "", "config", "list", "-o", "json")
	var entries []api.ConfigEntry
	if err := json.Unmarshal([]byte(r.stdout), &entries); err != nil || len(entries) != 3 || entries[0].Value == nil {
		t.Errorf("json: %v %q", err, r.stdout)
	}

	r = runFake(t, &fakeAPI{list: &api.ConfigList{}}, "", "config", "list", "-o", "json")
	if r.stdout != "[]\n" {
		t.Errorf("empty json list = %q", r.stdout)
	}
	r = runFake(t, &fakeAPI{list: &api.ConfigList{}}, "", "config", "list")
	if r.stdout != "KEY  VERSION  SIZE\n" {
		t.Errorf("empty text list = %q", r.stdout)
	}
}

func TestConfigDelete(t *testing.T) {
	f := &fakeAPI{write: &api.WriteResponse{Key: "mail/relay", Version: 99}}
	r := runFake(t, f, "", "config", "delete", "mail/relay")
	if r.code != ExitOK || r.stdout != "mail/relay deleted (version 99)\n" || f.gotKey != "mail/relay" {
		t.Errorf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
}

func TestConfigAPIErrors(t *testing.T) {
	notFound := client.NewAPIError(404, api.Error{Code: api.CodeNotFound, Message: `key "k" not found`})
	noQuorum := client.NewAPIError(503, api.Error{Code: api.CodeNoQuorum, Message: "no quorum", Hint: "run pmgcm promote --force"})
	for _, tt := range []struct {
		args []string
		err  error
		want string
	}{
		{[]string{"config", "get", "k"}, notFound, "pmgcm: key \"k\" not found\n"},
		{[]string{"config", "get", "k", "-o", "json"}, notFound, "pmgcm: key \"k\" not found\n"},
		{[]string{"config", "set", "k", "v"}, noQuorum, "pmgcm: no quorum\nrun pmgcm promote --force\n"},
		{[]string{"config", "delete", "k"}, notFound, "pmgcm: key \"k\" not found\n"},
		{[]string{"config", "list"}, noQuorum, "pmgcm: no quorum\nrun pmgcm promote --force\n"},
	} {
		r := runFake(t, &fakeAPI{err: tt.err}, "", tt.args...)
		if r.code != ExitError || r.stderr != tt.want || r.stdout != "" {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", tt.args, r.code, r.stdout, r.stderr)
		}
	}
}

func TestConfigUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"config", "get"},
		{"config", "get", ""},
		{"config", "get", "a", "b"},
		{"config", "set", "k"},
		{"config", "set", "k", "v", "--file", "f"},
		{"config", "set", "k", "--file", ""},
		{"config", "set", "k", "v", "w"},
		{"config", "delete"},
		{"config", "list", "a", "b"},
		{"config", "list", "-o", "xml"},
		{"config", "frobnicate"},
	} {
		f := &fakeAPI{}
		r := runFake(t, f, "", args...)
		if r.code != ExitUsage || !strings.HasPrefix(r.stderr, "pmgcm: ") || !strings.Contains(r.stderr, "Usage:") || r.stdout != "" {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", args, r.code, r.stdout, r.stderr)
		}
		if len(f.calls) != 0 {
			t.Errorf("%q: reached the daemon: %v", args, f.calls)
		}
	}
}

// staleRead is how the fake serves a stale read on a follower.
var staleRead = client.ReadInfo{Stale: true, AppliedIndex: 1041, LastContact: "2.35s"}

const staleNoteLine = "stale read from this node: applied index 1041, last contact with the master 2.35s\n"

func TestConfigGetStale(t *testing.T) {
	for _, v := range [][]byte{binaryValue, []byte("line\n"), {}} {
		f := &fakeAPI{value: v, ver: 7, read: staleRead}
		r := runFake(t, f, "", "config", "get", "mail/relay", "--stale")
		if r.code != ExitOK || r.stderr != staleNoteLine {
			t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
		}
		if !bytes.Equal([]byte(r.stdout), v) {
			t.Errorf("stdout = %q, want %q byte-exact", r.stdout, v)
		}
		if f.gotKey != "mail/relay" || !f.gotRead.Stale {
			t.Errorf("key %q, read options %+v", f.gotKey, f.gotRead)
		}
	}

	// The master answers a stale read with last contact 0s; a node that never heard
	// from one says never.
	f := &fakeAPI{value: []byte("v"), ver: 7, read: client.ReadInfo{Stale: true, AppliedIndex: 9, LastContact: "never"}}
	r := runFake(t, f, "", "config", "get", "k", "--stale", "-o", "json")
	if r.code != ExitOK || r.stderr != "stale read from this node: applied index 9, last contact with the master never\n" ||
		!strings.HasPrefix(r.stdout, "{\n  \"key\": \"k\",") {
		t.Errorf("json: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}

	// Without --stale: a linearizable read, and no note.
	f = &fakeAPI{value: []byte("v"), ver: 7}
	r = runFake(t, f, "", "config", "get", "k")
	if r.code != ExitOK || r.stderr != "" || r.stdout != "v" || f.gotRead.Stale {
		t.Errorf("default: exit %d, stdout %q, stderr %q, read options %+v", r.code, r.stdout, r.stderr, f.gotRead)
	}
}

func TestConfigListStale(t *testing.T) {
	list := &api.ConfigList{Entries: []api.ConfigEntry{{Key: "mail/relay", Version: 12, Size: 11}}}
	f := &fakeAPI{list: list, read: staleRead}
	r := runFake(t, f, "", "config", "list", "mail/", "--stale")
	want := "KEY         VERSION  SIZE\nmail/relay  12       11\n"
	if r.code != ExitOK || r.stdout != want || r.stderr != staleNoteLine || f.gotPref != "mail/" || !f.gotRead.Stale {
		t.Errorf("exit %d, stdout %q, stderr %q, prefix %q, read options %+v", r.code, r.stdout, r.stderr, f.gotPref, f.gotRead)
	}

	f = &fakeAPI{list: list, read: staleRead}
	r = runFake(t, f, "", "config", "list", "--stale", "-o", "json")
	var entries []api.ConfigEntry
	if err := json.Unmarshal([]byte(r.stdout), &entries); err != nil || len(entries) != 1 || r.stderr != staleNoteLine {
		t.Errorf("json: %v, stdout %q, stderr %q", err, r.stdout, r.stderr)
	}

	f = &fakeAPI{list: list}
	r = runFake(t, f, "", "config", "list")
	if r.code != ExitOK || r.stderr != "" || f.gotRead.Stale {
		t.Errorf("default: exit %d, stderr %q, read options %+v", r.code, r.stderr, f.gotRead)
	}
}

// gotIfVersion is the if-version the fake was sent, or "none" for an unconditional write.
func gotIfVersion(f *fakeAPI) string {
	if f.gotWrite.IfVersion == nil {
		return "none"
	}
	return strconv.FormatUint(*f.gotWrite.IfVersion, 10)
}

func TestConfigSetDeleteIfVersion(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
		out  string
	}{
		{[]string{"set", "k", "v", "--if-version", "42"}, "42", "k version 43\n"},
		{[]string{"set", "k", "v", "--if-version=0"}, "0", "k version 43\n"},
		{[]string{"set", "--if-version", "18446744073709551615", "k", "v"}, "18446744073709551615", "k version 43\n"},
		{[]string{"set", "k", "v"}, "none", "k version 43\n"},
		{[]string{"delete", "k", "--if-version", "42"}, "42", "k deleted (version 43)\n"},
		{[]string{"delete", "k", "--if-version", "0"}, "0", "k deleted (version 43)\n"},
		{[]string{"delete", "k"}, "none", "k deleted (version 43)\n"},
	} {
		f := &fakeAPI{write: &api.WriteResponse{Key: "k", Version: 43}}
		r := runFake(t, f, "", append([]string{"config"}, tt.args...)...)
		if got := gotIfVersion(f); r.code != ExitOK || r.stdout != tt.out || r.stderr != "" || got != tt.want {
			t.Errorf("%q: exit %d, stdout %q, stderr %q, if-version %s", tt.args, r.code, r.stdout, r.stderr, got)
		}
	}
}

func TestConfigIfVersionConflict(t *testing.T) {
	conflict := func(msg string, version uint64) error {
		return client.NewAPIError(409, api.Error{Code: api.CodeConflict, Message: msg, Version: version})
	}
	for _, tt := range []struct {
		args []string
		err  error
		want string
	}{
		{[]string{"set", "mail/relay", "v", "--if-version", "41"}, conflict(`key "mail/relay" is at version 42, not 41`, 42),
			"pmgcm: key \"mail/relay\" is at version 42, not 41\n" +
				"nothing was changed; to set it anyway, check the current value with 'pmgcm config get mail/relay', then retry with --if-version 42\n"},
		{[]string{"set", "my key", "v", "--if-version", "0"}, conflict(`key "my key" exists at version 7`, 7),
			"pmgcm: key \"my key\" exists at version 7\n" +
				"nothing was changed; to set it anyway, check the current value with 'pmgcm config get 'my key'', then retry with --if-version 7\n"},
		{[]string{"set", "k", "v", "--if-version", "5"}, conflict(`key "k" does not exist (version 0), not 5`, 0),
			"pmgcm: key \"k\" does not exist (version 0), not 5\n" +
				"nothing was changed; the key does not exist now: retry with --if-version 0 to create it only while it is absent\n"},
		{[]string{"delete", "k", "--if-version", "41"}, conflict(`key "k" is at version 42, not 41`, 42),
			"pmgcm: key \"k\" is at version 42, not 41\n" +
				"nothing was changed; to delete it anyway, check the current value with 'pmgcm config get k', then retry with --if-version 42\n"},
		{[]string{"delete", "k", "--if-version", "41"}, conflict(`key "k" does not exist (version 0), not 41`, 0),
			"pmgcm: key \"k\" does not exist (version 0), not 41\nnothing was changed; the key does not exist now\n"},
		// The daemon's own hint wins.
		{[]string{"delete", "k", "--if-version", "41"},
			client.NewAPIError(409, api.Error{Code: api.CodeConflict, Message: "at 42", Hint: "daemon hint", Version: 42}),
			"pmgcm: at 42\ndaemon hint\n"},
	} {
		f := &fakeAPI{err: tt.err}
		r := runFake(t, f, "", append([]string{"config"}, tt.args...)...)
		if r.code != ExitError || r.stdout != "" || r.stderr != tt.want {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", tt.args, r.code, r.stdout, r.stderr)
		}
		if len(f.calls) != 1 {
			t.Errorf("%q: calls %v", tt.args, f.calls)
		}
	}
}

func TestConfigIfVersionUsage(t *testing.T) {
	for _, args := range [][]string{
		{"config", "set", "k", "v", "--if-version", "-1"},
		{"config", "set", "k", "v", "--if-version", "abc"},
		{"config", "set", "k", "v", "--if-version", ""},
		{"config", "set", "k", "v", "--if-version", "1.5"},
		{"config", "set", "k", "v", "--if-version", "+3"},
		{"config", "set", "k", "v", "--if-version", "18446744073709551616"},
		{"config", "set", "k", "v", "--if-version"},
		{"config", "delete", "k", "--if-version", "-1"},
		{"config", "delete", "k", "--if-version=x"},
		{"config", "get", "k", "--if-version", "1"},
		{"config", "get", "k", "--stale=maybe"},
	} {
		f := &fakeAPI{}
		r := runFake(t, f, "", args...)
		if r.code != ExitUsage || !strings.HasPrefix(r.stderr, "pmgcm: ") || !strings.Contains(r.stderr, "Usage:") || r.stdout != "" {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", args, r.code, r.stdout, r.stderr)
		}
		if len(f.calls) != 0 {
			t.Errorf("%q: reached the daemon: %v", args, f.calls)
		}
	}
	r := runFake(t, &fakeAPI{}, "", "config", "set", "k", "v", "--if-version", "-1")
	if first, _, _ := strings.Cut(r.stderr, "\n"); first != `pmgcm: invalid argument "-1" for "--if-version" flag: must be a version: a non-negative integer` {
		t.Errorf("message = %q", first)
	}
}
