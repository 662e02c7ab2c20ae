package cli

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pmgcm/pmgcm/api"
)

// binaryValue is not valid UTF-8 and has no trailing newline.
var binaryValue = []byte{0x00, 0xff, 0xfe, '\n', 'a', 0x80, 0x0d}

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
	notFound := &APIError{Status: 404, wireError: api.Error{Code: api.CodeNotFound, Message: `key "k" not found`}}
	noQuorum := &APIError{Status: 503, wireError: api.Error{Code: api.CodeNoQuorum, Message: "no quorum", Hint: "run pmgcm promote --force"}}
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
