package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/api"
)

// seenRequest is what the test server recorded of one request.
type seenRequest struct {
	method, path, rawQuery, ctype, accept string
	query                                 map[string][]string
	body                                  []byte
}

// fakeDaemon is an http.Handler that answers like pmgclusterd per api.go and records the
// requests.
type fakeDaemon struct {
	mu   sync.Mutex
	seen []seenRequest
	// fail, when set, answers every request with this status and body.
	failStatus int
	failBody   string
}

func (d *fakeDaemon) last() seenRequest {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.seen[len(d.seen)-1]
}

func (d *fakeDaemon) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	d.mu.Lock()
	d.seen = append(d.seen, seenRequest{r.Method, r.URL.Path, r.URL.RawQuery,
		r.Header.Get("Content-Type"), r.Header.Get("Accept"), r.URL.Query(), body})
	d.mu.Unlock()
	if r.Host != "pmgcm" {
		http.Error(w, "bad host "+r.Host, http.StatusBadRequest)
		return
	}
	if d.failStatus != 0 {
		w.WriteHeader(d.failStatus)
		io.WriteString(w, d.failBody)
		return
	}
	key := r.URL.Query().Get("key")
	reply := func(v any) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(v)
	}
	// A stale read says how far behind it may be.
	if r.URL.Query().Get("stale") == "1" {
		w.Header().Set(api.HeaderStale, "1")
		w.Header().Set(api.HeaderAppliedIndex, "16")
		w.Header().Set(api.HeaderLastContact, "1.5s")
	}
	// A compare-and-set write applies only at version 17, the version of every key here.
	if iv, ok := r.URL.Query()["if_version"]; ok && (r.Method == http.MethodPut || r.Method == http.MethodDelete) && iv[0] != "17" {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusConflict)
		json.NewEncoder(w).Encode(api.Error{Code: api.CodeConflict, Version: 17,
			Message: fmt.Sprintf("version conflict on %q: it is at version 17, not %s", key, iv[0])})
		return
	}
	switch {
	case r.Method == http.MethodGet && r.URL.Path == api.PathStatus:
		reply(api.Status{Cluster: &api.Cluster{ID: "c0ffee", Epoch: 2, LeaderCID: 1},
			Nodes: []api.Node{{CID: 1, Name: "pmg5", IP: "10.0.0.1", Role: api.RoleMaster, State: api.StateActive,
				Local: true, Sys: &api.SysInfo{UptimeSeconds: 100, Load1: 0.5}}}})
	case r.Method == http.MethodPost && r.URL.Path == api.PathCreate:
		reply(api.CreateResponse{ClusterID: "c0ffee", CID: 1, Fingerprint: "FP"})
	case r.Method == http.MethodGet && r.URL.Path == api.PathConfig:
		w.Header().Set(api.HeaderVersion, "17")
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(binaryValue)
	case r.Method == http.MethodPut && r.URL.Path == api.PathConfig:
		reply(api.WriteResponse{Key: key, Version: 18})
	case r.Method == http.MethodDelete && r.URL.Path == api.PathConfig:
		reply(api.WriteResponse{Key: key, Version: 19})
	case r.Method == http.MethodGet && r.URL.Path == api.PathConfigList:
		reply(api.ConfigList{Entries: []api.ConfigEntry{{Key: r.URL.Query().Get("prefix") + "a", Version: 3, Size: 1}}})
	case r.Method == http.MethodGet && r.URL.Path == api.PathConfigWatch:
		p := r.URL.Query().Get("prefix")
		text := "x"
		switch from := r.URL.Query().Get("from"); from {
		case "0": // from the beginning: the current entries
			reply(api.WatchResponse{Events: []api.WatchEvent{{Key: p + "a", Version: 3, Value: &text}}, Next: 4})
		case "4":
			reply(api.WatchResponse{Events: []api.WatchEvent{{Key: p + "a", Version: 5, Deleted: true}}, Next: 5})
		case "5": // older than the deletions remembered
			reply(api.WatchResponse{Reset: true, Next: 9,
				Events: []api.WatchEvent{{Key: p + "b", Version: 8, ValueBase64: "AP/+CmGADQ=="}}})
		default:
			reply(api.WatchResponse{Events: []api.WatchEvent{}, Next: 9})
		}
	case r.Method == http.MethodPost && r.URL.Path == api.PathJoinProbe:
		var req api.JoinProbeRequest
		if json.Unmarshal(body, &req) != nil {
			w.WriteHeader(http.StatusBadRequest)
			reply(api.Error{Code: api.CodeBadRequest, Message: "bad body"})
			return
		}
		reply(api.JoinProbe{Address: req.Master + ":8006", Fingerprint: "FP", ClusterID: "c0ffee", Name: "pmg5", CID: 1})
	case r.Method == http.MethodPost && r.URL.Path == api.PathJoin:
		var req api.JoinRequest
		if json.Unmarshal(body, &req) != nil || req.Token != "tok" {
			w.WriteHeader(http.StatusForbidden)
			reply(api.Error{Code: api.CodeBadToken, Message: "the master refused the join token", Hint: "get a new one"})
			return
		}
		reply(api.JoinResponse{ClusterID: "c0ffee", CID: 2, Name: "pmg6", MasterAddress: req.Master})
	case r.URL.Path == api.PathJoinCmd && (r.Method == http.MethodGet ||
		r.Method == http.MethodPost && r.URL.Query().Get("rotate") == "1"):
		token := "tok"
		if r.Method == http.MethodPost {
			token = "new"
		}
		reply(api.JoinCmd{Master: "10.0.0.1", Fingerprint: "FP", Token: token,
			Command: "pmgcm join 10.0.0.1 --fingerprint FP --token " + token})
	case r.Method == http.MethodPost && r.URL.Path == api.PathDelete:
		var req api.DeleteRequest
		if json.Unmarshal(body, &req) != nil || req.CID != 3 {
			w.WriteHeader(http.StatusNotFound)
			reply(api.Error{Code: api.CodeNotFound, Message: "no such node"})
			return
		}
		reply(api.DeleteResponse{CID: req.CID, Name: "pmg7", IP: "10.0.0.3"})
	case r.Method == http.MethodPost && r.URL.Path == api.PathPromote:
		var req api.PromoteRequest
		if json.Unmarshal(body, &req) != nil {
			w.WriteHeader(http.StatusBadRequest)
			reply(api.Error{Code: api.CodeBadRequest, Message: "bad body"})
			return
		}
		if req.Force {
			reply(api.PromoteResponse{CID: 1, Name: "pmg5", Forced: true, Epoch: 3, Fenced: []uint64{2, 3}})
			return
		}
		reply(api.PromoteResponse{CID: 1, Name: "pmg5", AlreadyMaster: true, Epoch: 2})
	case r.Method == http.MethodPost && r.URL.Path == api.PathSync:
		var req api.SyncRequest
		if json.Unmarshal(body, &req) != nil || req.MasterIP == "10.0.0.9" {
			w.WriteHeader(http.StatusConflict)
			reply(api.Error{Code: api.CodeNotLeader, Message: "10.0.0.9 is not the master", Hint: "the master is 10.0.0.1"})
			return
		}
		if req.MasterIP != "" {
			reply(api.SyncResponse{Readmitted: true, MasterCID: 1, Epoch: 3, AppliedIndex: 40})
			return
		}
		reply(api.SyncResponse{MasterCID: 1, Epoch: 2, AppliedIndex: 42})
	case r.Method == http.MethodGet && r.URL.Path == api.PathQuarantine:
		q := r.URL.Query()
		msgs := []api.QuarantineMessage{}
		m := wireMessage
		if strings.Contains(m.From, q.Get("from")) && strings.Contains(strings.Join(m.To, ","), q.Get("to")) &&
			(q.Get("state") == "" || q.Get("state") == m.State) {
			msgs = append(msgs, m)
		}
		reply(msgs)
	case r.Method == http.MethodGet && r.URL.Path == api.PathQuarantineShow:
		switch r.URL.Query().Get("id") {
		case "q1":
			w.Header().Set(api.HeaderSHA256, wireMessage.SHA256)
		case "corrupt": // the daemon states the checksum of another message
			w.Header().Set(api.HeaderSHA256, strings.Repeat("0", 64))
		case "nosum":
		default:
			w.WriteHeader(http.StatusNotFound)
			reply(api.Error{Code: api.CodeNotFound, Message: "no message " + r.URL.Query().Get("id")})
			return
		}
		w.Header().Set("Content-Type", "message/rfc822")
		w.Write(wireBody)
	case r.Method == http.MethodPost && (r.URL.Path == api.PathQuarantineDelete || r.URL.Path == api.PathQuarantineRelease):
		if id := r.URL.Query().Get("id"); id != "q1" {
			w.WriteHeader(http.StatusNotFound)
			reply(api.Error{Code: api.CodeNotFound, Message: "no message " + id})
			return
		}
		m := wireMessage
		m.State = api.MailDeleted
		if r.URL.Path == api.PathQuarantineRelease {
			m.State = api.MailReleased
		}
		reply(m)
	default:
		w.WriteHeader(http.StatusNotFound)
		reply(api.Error{Code: api.CodeNotFound, Message: "no route " + r.Method + " " + r.URL.Path})
	}
}

// startDaemon serves d on a unix socket in a temporary directory and returns its path.
func startDaemon(t *testing.T, d *fakeDaemon) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "s.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: d}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return path
}

func TestClientWire(t *testing.T) {
	d := &fakeDaemon{}
	c := NewClient(startDaemon(t, d))
	ctx := context.Background()

	st, err := c.Status(ctx)
	if err != nil || st.Cluster.ID != "c0ffee" || st.Nodes[0].Sys.Load1 != 0.5 {
		t.Fatalf("Status = %+v, %v", st, err)
	}
	if r := d.last(); r.method != "GET" || r.path != api.PathStatus || r.rawQuery != "" || r.accept != "application/json" {
		t.Errorf("status request = %+v", r)
	}

	cr, err := c.Create(ctx)
	if err != nil || cr.ClusterID != "c0ffee" || cr.CID != 1 || cr.Fingerprint != "FP" {
		t.Fatalf("Create = %+v, %v", cr, err)
	}
	if r := d.last(); r.method != "POST" || r.path != api.PathCreate || len(r.body) != 0 {
		t.Errorf("create request = %+v", r)
	}

	// A key with slashes, spaces and query metacharacters travels in ?key= unharmed.
	key := "mail/relay host&x=1 #ü"
	v, err := c.ConfigGet(ctx, key, ReadOptions{})
	if err != nil || v.Version != 17 || !bytes.Equal(v.Value, binaryValue) || v.Read != (ReadInfo{}) {
		t.Fatalf("ConfigGet = %+v, %v", v, err)
	}
	if r := d.last(); r.method != "GET" || r.path != api.PathConfig || r.query["key"][0] != key || len(r.query) != 1 {
		t.Errorf("get request = %+v", r)
	}

	wr, err := c.ConfigSet(ctx, key, binaryValue, WriteOptions{})
	if err != nil || wr.Key != key || wr.Version != 18 {
		t.Fatalf("ConfigSet = %+v, %v", wr, err)
	}
	if r := d.last(); r.method != "PUT" || r.path != api.PathConfig || r.query["key"][0] != key ||
		!bytes.Equal(r.body, binaryValue) || r.ctype != "application/octet-stream" {
		t.Errorf("set request = %+v", r)
	}

	if r := d.last(); len(r.query) != 1 {
		t.Errorf("unconditional set sent %q", r.rawQuery)
	}

	if wr, err = c.ConfigSet(ctx, "empty", []byte{}, WriteOptions{}); err != nil || wr.Version != 18 {
		t.Fatalf("ConfigSet empty = %+v, %v", wr, err)
	}
	if r := d.last(); r.method != "PUT" || len(r.body) != 0 {
		t.Errorf("empty set request = %+v", r)
	}

	wr, err = c.ConfigDelete(ctx, key, WriteOptions{})
	if err != nil || wr.Key != key || wr.Version != 19 {
		t.Fatalf("ConfigDelete = %+v, %v", wr, err)
	}
	if r := d.last(); r.method != "DELETE" || r.path != api.PathConfig || r.query["key"][0] != key || len(r.query) != 1 {
		t.Errorf("delete request = %+v", r)
	}

	cl, ri, err := c.ConfigList(ctx, "mail/", ReadOptions{})
	if err != nil || len(cl.Entries) != 1 || cl.Entries[0].Key != "mail/a" || ri.Stale {
		t.Fatalf("ConfigList = %+v, %+v, %v", cl, ri, err)
	}
	if r := d.last(); r.method != "GET" || r.path != api.PathConfigList || r.query["prefix"][0] != "mail/" || len(r.query) != 1 {
		t.Errorf("list request = %+v", r)
	}
	if _, _, err := c.ConfigList(ctx, "", ReadOptions{}); err != nil {
		t.Fatal(err)
	}
	if r := d.last(); r.rawQuery != "" {
		t.Errorf("list without prefix sent query %q", r.rawQuery)
	}
}

func TestClientWireJoin(t *testing.T) {
	d := &fakeDaemon{}
	c := NewClient(startDaemon(t, d))
	ctx := context.Background()

	p, err := c.JoinProbe(ctx, "10.0.0.1")
	if err != nil || p.Address != "10.0.0.1:8006" || p.Fingerprint != "FP" || p.ClusterID != "c0ffee" || p.Name != "pmg5" || p.CID != 1 {
		t.Fatalf("JoinProbe = %+v, %v", p, err)
	}
	if r := d.last(); r.method != "POST" || r.path != api.PathJoinProbe || r.rawQuery != "" ||
		r.ctype != "application/json" || string(r.body) != `{"master":"10.0.0.1"}` {
		t.Errorf("probe request = %+v (body %s)", r, r.body)
	}

	req := api.JoinRequest{Master: "10.0.0.1:8006", Fingerprint: "FP", Token: "tok"}
	jr, err := c.Join(ctx, req)
	if err != nil || *jr != (api.JoinResponse{ClusterID: "c0ffee", CID: 2, Name: "pmg6", MasterAddress: "10.0.0.1:8006"}) {
		t.Fatalf("Join = %+v, %v", jr, err)
	}
	if r := d.last(); r.method != "POST" || r.path != api.PathJoin || r.ctype != "application/json" ||
		string(r.body) != `{"master":"10.0.0.1:8006","fingerprint":"FP","token":"tok"}` {
		t.Errorf("join request = %+v (body %s)", r, r.body)
	}
	req.Token = "wrong"
	_, err = c.Join(ctx, req)
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != 403 || ae.Code != api.CodeBadToken || err.Error() != "the master refused the join token\nget a new one" {
		t.Errorf("Join with a bad token: %#v", err)
	}

	jc, err := c.JoinCmd(ctx, false)
	if err != nil || jc.Token != "tok" || jc.Command != "pmgcm join 10.0.0.1 --fingerprint FP --token tok" || jc.Master != "10.0.0.1" {
		t.Fatalf("JoinCmd = %+v, %v", jc, err)
	}
	if r := d.last(); r.method != "GET" || r.path != api.PathJoinCmd || r.rawQuery != "" || len(r.body) != 0 {
		t.Errorf("join-cmd request = %+v", r)
	}
	if jc, err = c.JoinCmd(ctx, true); err != nil || jc.Token != "new" {
		t.Fatalf("JoinCmd rotate = %+v, %v", jc, err)
	}
	if r := d.last(); r.method != "POST" || r.path != api.PathJoinCmd || r.rawQuery != "rotate=1" || len(r.body) != 0 {
		t.Errorf("join-cmd rotate request = %+v", r)
	}

	dr, err := c.Delete(ctx, 3, false)
	if err != nil || *dr != (api.DeleteResponse{CID: 3, Name: "pmg7", IP: "10.0.0.3"}) {
		t.Fatalf("Delete = %+v, %v", dr, err)
	}
	if r := d.last(); r.method != "POST" || r.path != api.PathDelete || r.ctype != "application/json" || string(r.body) != `{"cid":3}` {
		t.Errorf("delete request = %+v (body %s)", r, r.body)
	}
	if dr, err = c.Delete(ctx, 3, true); err != nil || dr.CID != 3 {
		t.Fatalf("Delete --force = %+v, %v", dr, err)
	}
	if r := d.last(); r.path != api.PathDelete || string(r.body) != `{"cid":3,"force":true}` {
		t.Errorf("forced delete request = %+v (body %s)", r, r.body)
	}
	if _, err := c.Delete(ctx, 9, false); !errors.As(err, &ae) || ae.Code != api.CodeNotFound || ae.Status != 404 {
		t.Errorf("Delete of an unknown cid: %#v", err)
	}
}

func TestClientWirePromoteSync(t *testing.T) {
	d := &fakeDaemon{}
	c := NewClient(startDaemon(t, d))
	ctx := context.Background()

	pr, err := c.Promote(ctx, false)
	if err != nil || pr.CID != 1 || pr.Name != "pmg5" || !pr.AlreadyMaster || pr.Forced || pr.Epoch != 2 {
		t.Fatalf("Promote = %+v, %v", pr, err)
	}
	if r := d.last(); r.method != "POST" || r.path != api.PathPromote || r.rawQuery != "" ||
		r.ctype != "application/json" || string(r.body) != `{}` {
		t.Errorf("promote request = %+v (body %s)", r, r.body)
	}
	pr, err = c.Promote(ctx, true)
	if err != nil || !pr.Forced || pr.Epoch != 3 || len(pr.Fenced) != 2 || pr.Fenced[0] != 2 || pr.Fenced[1] != 3 {
		t.Fatalf("Promote force = %+v, %v", pr, err)
	}
	if r := d.last(); r.path != api.PathPromote || string(r.body) != `{"force":true}` {
		t.Errorf("forced promote request = %+v (body %s)", r, r.body)
	}

	sr, err := c.Sync(ctx, "")
	if err != nil || *sr != (api.SyncResponse{MasterCID: 1, Epoch: 2, AppliedIndex: 42}) {
		t.Fatalf("Sync = %+v, %v", sr, err)
	}
	if r := d.last(); r.method != "POST" || r.path != api.PathSync || r.ctype != "application/json" || string(r.body) != `{}` {
		t.Errorf("sync request = %+v (body %s)", r, r.body)
	}
	sr, err = c.Sync(ctx, "10.0.0.1")
	if err != nil || *sr != (api.SyncResponse{Readmitted: true, MasterCID: 1, Epoch: 3, AppliedIndex: 40}) {
		t.Fatalf("Sync --master_ip = %+v, %v", sr, err)
	}
	if r := d.last(); r.path != api.PathSync || string(r.body) != `{"master_ip":"10.0.0.1"}` {
		t.Errorf("sync --master_ip request = %+v (body %s)", r, r.body)
	}
	_, err = c.Sync(ctx, "10.0.0.9")
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != 409 || ae.Code != api.CodeNotLeader || err.Error() != "10.0.0.9 is not the master\nthe master is 10.0.0.1" {
		t.Errorf("Sync with a non-master: %#v", err)
	}
}

func TestClientAPIError(t *testing.T) {
	d := &fakeDaemon{failStatus: http.StatusConflict,
		failBody: `{"code":"cluster_exists","error":"already in cluster c0ffee","hint":"run pmgcm status"}`}
	c := NewClient(startDaemon(t, d))
	_, err := c.Create(context.Background())
	var ae *APIError
	if !errors.As(err, &ae) {
		t.Fatalf("err = %#v, want *APIError", err)
	}
	if ae.Status != 409 || ae.Code != api.CodeClusterExists || ae.Message != "already in cluster c0ffee" || ae.Hint != "run pmgcm status" {
		t.Errorf("APIError = %+v", ae)
	}
	if err.Error() != "already in cluster c0ffee\nrun pmgcm status" {
		t.Errorf("Error() = %q", err.Error())
	}

	// An answer that is not an api.Error still reads well.
	d.failStatus, d.failBody = http.StatusBadGateway, "upstream broke\n"
	_, err = c.ConfigGet(context.Background(), "k", ReadOptions{})
	if !errors.As(err, &ae) || ae.Status != 502 || err.Error() != "daemon answered 502 Bad Gateway: upstream broke" {
		t.Errorf("err = %v", err)
	}
}

func TestClientBadVersionHeader(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "value")
	})}
	go srv.Serve(ln)
	defer srv.Close()
	if _, err := NewClient(path).ConfigGet(context.Background(), "k", ReadOptions{}); err == nil {
		t.Error("no error for a missing version header")
	}
}

// TestRunAgainstSocket runs whole commands through the real client and socket.
func TestRunAgainstSocket(t *testing.T) {
	path := startDaemon(t, &fakeDaemon{})
	var out, errb bytes.Buffer
	if code := Run(context.Background(), []string{"--socket", path, "config", "get", "k"}, nil, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if !bytes.Equal(out.Bytes(), binaryValue) {
		t.Errorf("stdout = %q", out.Bytes())
	}
	out.Reset()
	t.Setenv("PMGCM_SOCKET", path)
	if code := Run(context.Background(), []string{"status"}, nil, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if want := "pmg5(1)              10.0.0.1        master A           00:01   0.50     0%     0%\n"; !bytes.HasSuffix(out.Bytes(), []byte(want)) {
		t.Errorf("status = %q", out.String())
	}

	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"join-cmd"}, "pmgcm join 10.0.0.1 --fingerprint FP --token tok\n"},
		{[]string{"delete", "3"}, "deleted cid 3 (pmg7, 10.0.0.3)\n"},
		{[]string{"promote"}, "this node is already the master (cid 1); nothing changed\n"},
		// Off a terminal --force proceeds; this node's IP comes from the status's local row.
		{[]string{"promote", "--force"}, "node pmg5(1) is now the master of epoch 3\n" +
			"fenced: cid 2, cid 3: run 'pmgcm sync --master_ip 10.0.0.1' on each to bring it back\n"},
		{[]string{"sync", "--wait", "0"}, "in sync with the master (cid 1): applied index 42\n"},
		{[]string{"sync"}, "in sync with the master (cid 1): applied index 42\nnode pmg5(1) is in sync: state A\n"},
		{[]string{"sync", "--master_ip", "10.0.0.1", "--wait", "0"}, "re-admitted by the master (cid 1) at epoch 3\n"},
		// The fake daemon's status never shows the joined node: --wait 0 only joins.
		{[]string{"join", "10.0.0.1", "--fingerprint", "FP", "--token", "tok", "--yes", "--wait", "0"},
			"joined cluster c0ffee as cid 2 (master 10.0.0.1); catching up\n"},
	} {
		out.Reset()
		errb.Reset()
		if code := Run(context.Background(), tt.args, nil, &out, &errb); code != 0 || out.String() != tt.want {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", tt.args, code, out.String(), errb.String())
		}
	}
}

func TestClientWireStaleAndCAS(t *testing.T) {
	d := &fakeDaemon{}
	c := NewClient(startDaemon(t, d))
	ctx := context.Background()
	stale := ReadInfo{Stale: true, AppliedIndex: 16, LastContact: "1.5s"}

	v, err := c.ConfigGet(ctx, "mail/relay", ReadOptions{Stale: true})
	if err != nil || v.Version != 17 || !bytes.Equal(v.Value, binaryValue) || v.Read != stale {
		t.Fatalf("stale ConfigGet = %+v, %v", v, err)
	}
	if r := d.last(); r.method != "GET" || r.path != api.PathConfig || r.query["key"][0] != "mail/relay" ||
		r.query["stale"][0] != "1" || len(r.query) != 2 {
		t.Errorf("stale get request = %+v", r)
	}

	cl, ri, err := c.ConfigList(ctx, "mail/", ReadOptions{Stale: true})
	if err != nil || len(cl.Entries) != 1 || ri != stale {
		t.Fatalf("stale ConfigList = %+v, %+v, %v", cl, ri, err)
	}
	if r := d.last(); r.path != api.PathConfigList || r.query["prefix"][0] != "mail/" || r.query["stale"][0] != "1" || len(r.query) != 2 {
		t.Errorf("stale list request = %+v", r)
	}
	if _, _, err := c.ConfigList(ctx, "", ReadOptions{Stale: true}); err != nil {
		t.Fatal(err)
	}
	if r := d.last(); r.rawQuery != "stale=1" {
		t.Errorf("stale list without prefix sent %q", r.rawQuery)
	}

	for _, n := range []uint64{17, 0} {
		wr, err := c.ConfigSet(ctx, "k", []byte("v"), WriteOptions{IfVersion: &n})
		if r := d.last(); r.method != "PUT" || r.query["key"][0] != "k" || r.query["if_version"][0] != fmt.Sprint(n) || len(r.query) != 2 {
			t.Errorf("CAS set request = %+v", r)
		}
		if n == 17 && (err != nil || wr.Version != 18) {
			t.Errorf("CAS set at the current version = %+v, %v", wr, err)
		}
		var ae *APIError
		if n == 0 && (!errors.As(err, &ae) || ae.Status != 409 || ae.Code != api.CodeConflict || ae.Version != 17 ||
			ae.Message != `version conflict on "k": it is at version 17, not 0`) {
			t.Errorf("CAS set with a stale version: %#v", err)
		}

		wr, err = c.ConfigDelete(ctx, "k", WriteOptions{IfVersion: &n})
		if r := d.last(); r.method != "DELETE" || r.query["if_version"][0] != fmt.Sprint(n) || len(r.query) != 2 {
			t.Errorf("CAS delete request = %+v", r)
		}
		if n == 17 && (err != nil || wr.Version != 19) {
			t.Errorf("CAS delete at the current version = %+v, %v", wr, err)
		}
		if n == 0 && (!errors.As(err, &ae) || ae.Code != api.CodeConflict || ae.Version != 17) {
			t.Errorf("CAS delete with a stale version: %#v", err)
		}
	}
}

func TestClientWireWatch(t *testing.T) {
	d := &fakeDaemon{}
	c := NewClient(startDaemon(t, d))
	ctx := context.Background()

	wr, err := c.ConfigWatch(ctx, "mail/", 0, 25*time.Second)
	if err != nil || wr.Next != 4 || wr.Reset || len(wr.Events) != 1 || wr.Events[0].Key != "mail/a" ||
		wr.Events[0].Version != 3 || wr.Events[0].Value == nil || *wr.Events[0].Value != "x" {
		t.Fatalf("ConfigWatch from 0 = %+v, %v", wr, err)
	}
	if r := d.last(); r.method != "GET" || r.path != api.PathConfigWatch || r.query["prefix"][0] != "mail/" ||
		r.query["from"][0] != "0" || r.query["wait"][0] != "25s" || len(r.query) != 3 || len(r.body) != 0 {
		t.Errorf("watch request = %+v", r)
	}

	wr, err = c.ConfigWatch(ctx, "", 5, 1500*time.Millisecond)
	if err != nil || !wr.Reset || wr.Next != 9 || len(wr.Events) != 1 || wr.Events[0].ValueBase64 != "AP/+CmGADQ==" {
		t.Fatalf("ConfigWatch reset = %+v, %v", wr, err)
	}
	if r := d.last(); r.rawQuery != "from=5&wait=1.5s" {
		t.Errorf("watch without prefix sent %q", r.rawQuery)
	}

	if _, err = c.ConfigWatch(ctx, "", 18446744073709551615, 0); err != nil {
		t.Fatal(err)
	}
	if r := d.last(); r.rawQuery != "from=18446744073709551615" {
		t.Errorf("watch with the daemon's default wait sent %q", r.rawQuery)
	}
}

func TestClientBadStaleHeader(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(api.HeaderVersion, "3")
		w.Header().Set(api.HeaderStale, "1")
		w.Header().Set(api.HeaderAppliedIndex, "lots")
		io.WriteString(w, "value")
	})}
	go srv.Serve(ln)
	defer srv.Close()
	if _, err := NewClient(path).ConfigGet(context.Background(), "k", ReadOptions{Stale: true}); err == nil ||
		!strings.Contains(err.Error(), api.HeaderAppliedIndex) {
		t.Errorf("bad applied index header: %v", err)
	}
}

// TestRunAgainstSocketConfig runs the new config commands through the real client and
// socket.
func TestRunAgainstSocketConfig(t *testing.T) {
	path := startDaemon(t, &fakeDaemon{})
	for _, tt := range []struct {
		args      []string
		code      int
		out, errs string
	}{
		{[]string{"config", "get", "k", "--stale"}, 0, string(binaryValue),
			"stale read from this node: applied index 16, last contact with the master 1.5s\n"},
		{[]string{"config", "list", "mail/", "--stale"}, 0, "KEY     VERSION  SIZE\nmail/a  3        1\n",
			"stale read from this node: applied index 16, last contact with the master 1.5s\n"},
		{[]string{"config", "set", "k", "v", "--if-version", "17"}, 0, "k version 18\n", ""},
		{[]string{"config", "set", "k", "v", "--if-version", "0"}, 1, "",
			"pmgcm: version conflict on \"k\": it is at version 17, not 0\n" +
				"nothing was changed; to set it anyway, check the current value with 'pmgcm config get k', then retry with --if-version 17\n"},
		{[]string{"config", "delete", "k", "--if-version=17"}, 0, "k deleted (version 19)\n", ""},
		{[]string{"config", "watch", "mail/", "--once"}, 0, "3 mail/a set 1 bytes\n", ""},
		{[]string{"config", "watch", "--from", "4", "--once", "-o", "json"}, 0,
			`{"key":"a","version":5,"deleted":true}` + "\n", ""},
		{[]string{"config", "watch", "--from", "5", "--once", "-o", "json"}, 0,
			`{"reset":true,"next":9}` + "\n" + `{"key":"b","version":8,"value_base64":"AP/+CmGADQ=="}` + "\n",
			"watch reset at version 9: the events that follow are the whole state (all keys)\n"},
	} {
		var out, errb bytes.Buffer
		code := Run(context.Background(), append([]string{"--socket", path}, tt.args...), nil, &out, &errb)
		if code != tt.code || out.String() != tt.out || errb.String() != tt.errs {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", tt.args, code, out.String(), errb.String())
		}
	}
}
