package cli

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pmgcm/pmgcm/api"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// fakeAPI is an API whose answers the test sets; it records what it was asked.
type fakeAPI struct {
	status *api.Status
	create *api.CreateResponse
	value  []byte
	ver    uint64
	write  *api.WriteResponse
	list   *api.ConfigList
	err    error

	calls    []string
	gotKey   string
	gotValue []byte
	gotPref  string
}

func (f *fakeAPI) Status(context.Context) (*api.Status, error) {
	f.calls = append(f.calls, "status")
	return f.status, f.err
}

func (f *fakeAPI) Create(context.Context) (*api.CreateResponse, error) {
	f.calls = append(f.calls, "create")
	return f.create, f.err
}

func (f *fakeAPI) ConfigGet(_ context.Context, key string) ([]byte, uint64, error) {
	f.calls = append(f.calls, "get")
	f.gotKey = key
	return f.value, f.ver, f.err
}

func (f *fakeAPI) ConfigSet(_ context.Context, key string, value []byte) (*api.WriteResponse, error) {
	f.calls = append(f.calls, "set")
	f.gotKey, f.gotValue = key, value
	return f.write, f.err
}

func (f *fakeAPI) ConfigDelete(_ context.Context, key string) (*api.WriteResponse, error) {
	f.calls = append(f.calls, "delete")
	f.gotKey = key
	return f.write, f.err
}

func (f *fakeAPI) ConfigList(_ context.Context, prefix string) (*api.ConfigList, error) {
	f.calls = append(f.calls, "list")
	f.gotPref = prefix
	return f.list, f.err
}

// result is what one pmgcm run printed and returned.
type result struct {
	stdout, stderr string
	code           int
	socket         string // the socket the command would have dialled
}

// runFake runs pmgcm with args against fake, feeding stdin.
func runFake(t *testing.T, fake API, stdin string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	var r result
	r.code = run(context.Background(), args, env{
		stdin:  strings.NewReader(stdin),
		stdout: &out,
		stderr: &errb,
		getenv: func(string) string { return "" },
		newAPI: func(socket string) API { r.socket = socket; return fake },
	})
	r.stdout, r.stderr = out.String(), errb.String()
	return r
}

// golden compares got with testdata/name, or rewrites that file under -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./cli/ -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s (run with -update if intended)\n--- got:\n%s\n--- want:\n%s", path, got, want)
	}
}
