package cli

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/api/client"
)

func TestCreate(t *testing.T) {
	f := &fakeAPI{create: &api.CreateResponse{ClusterID: "c0ffee", CID: 1, Fingerprint: "SHA256:AB:CD"}}
	r := runFake(t, f, "", "create")
	want := "cluster c0ffee created; this node is master (cid 1)\nfingerprint: SHA256:AB:CD\n"
	if r.code != ExitOK || r.stdout != want || r.stderr != "" {
		t.Errorf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}

	exists := client.NewAPIError(409, api.Error{Code: api.CodeClusterExists, Message: "this node is already in cluster c0ffee"})
	r = runFake(t, &fakeAPI{err: exists}, "", "create")
	if r.code != ExitError || r.stderr != "pmgcm: this node is already in cluster c0ffee\n" || r.stdout != "" {
		t.Errorf("exists: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}

	r = runFake(t, &fakeAPI{}, "", "create", "now")
	if r.code != ExitUsage {
		t.Errorf("create now: exit %d", r.code)
	}
}

func TestHelpAndVersion(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {}, {"help"}} {
		r := runFake(t, &fakeAPI{}, "", args...)
		if r.code != ExitOK || !strings.Contains(r.stdout, "Available Commands:") || r.stderr != "" {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", args, r.code, r.stdout, r.stderr)
		}
		for _, c := range []string{"create", "join", "join-cmd", "status", "delete", "promote", "sync", "config", "quarantine"} {
			if !strings.Contains(r.stdout, "\n  "+c+" ") {
				t.Errorf("%q: help lacks %s", args, c)
			}
		}
		if strings.Contains(r.stdout, "\n  completion ") { // hidden; Long names it
			t.Errorf("%q: help lists a completion command", args)
		}
	}
	r := runFake(t, &fakeAPI{}, "", "help", "status")
	if r.code != ExitOK || !strings.Contains(r.stdout, "--list-single-node") {
		t.Errorf("help status: exit %d, %q", r.code, r.stdout)
	}
	r = runFake(t, &fakeAPI{}, "", "config", "--help")
	if r.code != ExitOK || !strings.Contains(r.stdout, "get") || !strings.Contains(r.stdout, "delete") {
		t.Errorf("config --help: exit %d, %q", r.code, r.stdout)
	}
	r = runFake(t, &fakeAPI{}, "", "--version")
	if r.code != ExitOK || r.stdout != "pmgcm "+Version+"\n" {
		t.Errorf("--version: exit %d, %q", r.code, r.stdout)
	}
}

func TestUnknownCommand(t *testing.T) {
	for _, cmd := range []string{"frobnicate", "recover"} {
		r := runFake(t, &fakeAPI{}, "", cmd)
		if r.code != ExitUsage || !strings.HasPrefix(r.stderr, "pmgcm: unknown command") {
			t.Errorf("%s: exit %d, stderr %q", cmd, r.code, r.stderr)
		}
	}
}

func TestSocketChoice(t *testing.T) {
	st := &api.Status{}
	r := runFake(t, &fakeAPI{status: st}, "", "status")
	if r.socket != DefaultSocketPath {
		t.Errorf("default socket = %q", r.socket)
	}
	r = runFake(t, &fakeAPI{status: st}, "", "--socket", "/tmp/x.sock", "status")
	if r.socket != "/tmp/x.sock" {
		t.Errorf("--socket before = %q", r.socket)
	}
	r = runFake(t, &fakeAPI{status: st}, "", "status", "--socket=/tmp/y.sock")
	if r.socket != "/tmp/y.sock" {
		t.Errorf("--socket after = %q", r.socket)
	}

	var out, errb bytes.Buffer
	var got string
	run(context.Background(), []string{"status"}, env{
		stdin: strings.NewReader(""), stdout: &out, stderr: &errb,
		getenv: func(k string) string {
			if k == "PMGCM_SOCKET" {
				return "/env/pmgcm.sock"
			}
			return ""
		},
		newAPI: func(s string) API { got = s; return &fakeAPI{status: st} },
	})
	if got != "/env/pmgcm.sock" {
		t.Errorf("PMGCM_SOCKET socket = %q", got)
	}
}

// slowAPI blocks until its ctx ends.
type slowAPI struct{ fakeAPI }

func (s *slowAPI) Status(ctx context.Context) (*api.Status, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

func TestTimeout(t *testing.T) {
	start := time.Now()
	r := runFake(t, &slowAPI{}, "", "status", "--timeout", "50ms")
	if r.code != ExitError || !strings.Contains(r.stderr, "no answer from pmgclusterd") || !strings.Contains(r.stderr, "--timeout") {
		t.Errorf("exit %d, stderr %q", r.code, r.stderr)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v", d)
	}
}

// TestUnreachableSocket runs the real client against a socket path that does not exist.
func TestUnreachableSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing.sock")
	var out, errb bytes.Buffer
	code := Run(context.Background(), []string{"--socket", path, "status"}, strings.NewReader(""), &out, &errb)
	want := "pmgcm: cannot reach pmgclusterd at " + path + ": connect: no such file or directory; is the daemon running? " +
		"(start it with: pmgclusterd --data-dir DIR --ip IP, or point --socket / PMGCM_SOCKET at its socket)\n"
	if code != ExitError || errb.String() != want || out.Len() != 0 {
		t.Errorf("exit %d\nstderr %q\nwant   %q", code, errb.String(), want)
	}

	_, err := client.New(path).Status(context.Background())
	if !errors.Is(err, client.ErrUnreachable) {
		t.Errorf("err = %v, want client.ErrUnreachable", err)
	}
}
