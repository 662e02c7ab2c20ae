package cli

import (
	"bytes"
	"context"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/api/client"
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
	// read is how the fake says a get or list was served (stale or not).
	read client.ReadInfo
	err  error

	probe   *api.JoinProbe
	join    *api.JoinResponse
	joinCmd *api.JoinCmd
	del     *api.DeleteResponse
	promote *api.PromoteResponse
	sync    *api.SyncResponse
	// quarantine answers QuarantineList; shown and shownSum QuarantineShow; qmsg
	// QuarantineDelete and QuarantineRelease.
	quarantine []api.QuarantineMessage
	shown      []byte
	shownSum   string
	qmsg       *api.QuarantineMessage
	// statusSeq, when set, answers the status calls in turn, the last one over and over.
	statusSeq []statusAnswer
	// watchSeq answers the watch calls in turn; once it is used up, a watch call waits
	// for its ctx to end, like a long poll on a quiet store.
	watchSeq []watchAnswer
	// errs overrides err for the calls named as in calls.
	errs map[string]error

	// onCall, when set, runs at each call, named as in calls, before it answers.
	onCall func(call string)

	calls     []string
	gotKey    string
	gotValue  []byte
	gotPref   string
	gotMaster string
	gotJoin   api.JoinRequest
	gotTTL    time.Duration
	gotRotate bool
	gotCID    uint64
	// gotForce is the force flag of the last Delete or Promote.
	gotForce    bool
	gotMasterIP string
	gotRead     client.ReadOptions
	gotWrite    client.WriteOptions
	gotWatch    []watchCall
	// gotFilter is what the last QuarantineList asked for: from, to, state.
	gotFilter [3]string
	gotID     string
}

// watchAnswer is one answer of a watch call.
type watchAnswer struct {
	r   *api.WatchResponse
	err error
}

// watchCall is what one watch call asked for.
type watchCall struct {
	prefix string
	from   uint64
	wait   time.Duration
	// hasDeadline is true when the call's ctx had a deadline; timeout is how far it was.
	hasDeadline bool
	timeout     time.Duration
}

// statusAnswer is one answer of a status call.
type statusAnswer struct {
	st  *api.Status
	err error
}

// record notes a call and runs onCall.
func (f *fakeAPI) record(call string) {
	f.calls = append(f.calls, call)
	if f.onCall != nil {
		f.onCall(call)
	}
}

func (f *fakeAPI) errFor(call string) error {
	if err, ok := f.errs[call]; ok {
		return err
	}
	return f.err
}

func (f *fakeAPI) Status(context.Context) (*api.Status, error) {
	f.record("status")
	if len(f.statusSeq) > 0 {
		a := f.statusSeq[0]
		if len(f.statusSeq) > 1 {
			f.statusSeq = f.statusSeq[1:]
		}
		return a.st, a.err
	}
	return f.status, f.errFor("status")
}

func (f *fakeAPI) JoinProbe(_ context.Context, master string) (*api.JoinProbe, error) {
	f.record("probe")
	f.gotMaster = master
	return f.probe, f.errFor("probe")
}

func (f *fakeAPI) Join(_ context.Context, req api.JoinRequest) (*api.JoinResponse, error) {
	f.record("join")
	f.gotJoin = req
	return f.join, f.errFor("join")
}

func (f *fakeAPI) JoinCmd(_ context.Context, rotate bool) (*api.JoinCmd, error) {
	f.record("join-cmd")
	f.gotRotate = rotate
	return f.joinCmd, f.errFor("join-cmd")
}

func (f *fakeAPI) RotateJoinToken(_ context.Context, ttl time.Duration) (*api.JoinCmd, error) {
	f.record("join-cmd")
	f.gotRotate, f.gotTTL = true, ttl
	return f.joinCmd, f.errFor("join-cmd")
}

func (f *fakeAPI) Delete(_ context.Context, cid uint64, force bool) (*api.DeleteResponse, error) {
	f.record("delete-node")
	f.gotCID, f.gotForce = cid, force
	return f.del, f.errFor("delete-node")
}

func (f *fakeAPI) Promote(_ context.Context, force bool) (*api.PromoteResponse, error) {
	f.record("promote")
	f.gotForce = force
	return f.promote, f.errFor("promote")
}

func (f *fakeAPI) Sync(_ context.Context, masterIP string) (*api.SyncResponse, error) {
	f.record("sync")
	f.gotMasterIP = masterIP
	return f.sync, f.errFor("sync")
}

func (f *fakeAPI) Create(context.Context) (*api.CreateResponse, error) {
	f.record("create")
	return f.create, f.err
}

func (f *fakeAPI) ConfigGet(_ context.Context, key string, opts client.ReadOptions) (*client.ConfigValue, error) {
	f.record("get")
	f.gotKey, f.gotRead = key, opts
	if f.err != nil {
		return nil, f.err
	}
	return &client.ConfigValue{Value: f.value, Version: f.ver, Read: f.read}, nil
}

func (f *fakeAPI) ConfigSet(_ context.Context, key string, value []byte, opts client.WriteOptions) (*api.WriteResponse, error) {
	f.record("set")
	f.gotKey, f.gotValue, f.gotWrite = key, value, opts
	return f.write, f.err
}

func (f *fakeAPI) ConfigDelete(_ context.Context, key string, opts client.WriteOptions) (*api.WriteResponse, error) {
	f.record("delete")
	f.gotKey, f.gotWrite = key, opts
	return f.write, f.err
}

func (f *fakeAPI) ConfigList(_ context.Context, prefix string, opts client.ReadOptions) (*api.ConfigList, client.ReadInfo, error) {
	f.record("list")
	f.gotPref, f.gotRead = prefix, opts
	return f.list, f.read, f.err
}

func (f *fakeAPI) ConfigWatch(ctx context.Context, prefix string, from uint64, wait time.Duration) (*api.WatchResponse, error) {
	call := watchCall{prefix: prefix, from: from, wait: wait}
	if dl, ok := ctx.Deadline(); ok {
		call.hasDeadline, call.timeout = true, time.Until(dl)
	}
	f.gotWatch = append(f.gotWatch, call)
	f.record("watch")
	if len(f.watchSeq) == 0 {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	a := f.watchSeq[0]
	f.watchSeq = f.watchSeq[1:]
	return a.r, a.err
}

func (f *fakeAPI) QuarantineList(_ context.Context, from, to, state string) ([]api.QuarantineMessage, error) {
	f.record("quarantine-list")
	f.gotFilter = [3]string{from, to, state}
	return f.quarantine, f.errFor("quarantine-list")
}

func (f *fakeAPI) QuarantineShow(_ context.Context, id string) ([]byte, string, error) {
	f.record("quarantine-show")
	f.gotID = id
	if err := f.errFor("quarantine-show"); err != nil {
		return nil, "", err
	}
	return f.shown, f.shownSum, nil
}

func (f *fakeAPI) QuarantineDelete(_ context.Context, id string) (*api.QuarantineMessage, error) {
	f.record("quarantine-delete")
	f.gotID = id
	return f.qmsg, f.errFor("quarantine-delete")
}

func (f *fakeAPI) QuarantineRelease(_ context.Context, id string) (*api.QuarantineMessage, error) {
	f.record("quarantine-release")
	f.gotID = id
	return f.qmsg, f.errFor("quarantine-release")
}

// result is what one pmgcm run printed and returned.
type result struct {
	stdout, stderr string
	code           int
	socket         string // the socket the command would have dialled
}

// runFake runs pmgcm with args against fake, feeding stdin, with no terminal and an empty
// environment.
func runFake(t *testing.T, fake API, stdin string, args ...string) result {
	t.Helper()
	return runEnv(t, context.Background(), env{stdin: strings.NewReader(stdin)}, fake, args...)
}

// runEnv runs pmgcm with args against fake in e, whose stdout, stderr and newAPI it sets;
// a nil stdin reads as empty and a nil getenv as an empty environment. A stderr set in e
// gets a copy of what is written to stderr as it is written.
func runEnv(t *testing.T, ctx context.Context, e env, fake API, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	var r result
	if e.stderr != nil {
		e.stdout, e.stderr = &out, io.MultiWriter(&errb, e.stderr)
	} else {
		e.stdout, e.stderr = &out, &errb
	}
	if e.stdin == nil {
		e.stdin = strings.NewReader("")
	}
	if e.getenv == nil {
		e.getenv = func(string) string { return "" }
	}
	e.newAPI = func(socket string) API { r.socket = socket; return fake }
	r.code = run(ctx, args, e)
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
