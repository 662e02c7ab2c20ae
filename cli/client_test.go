package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"testing"

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
	switch {
	case r.Method == http.MethodGet && r.URL.Path == api.PathStatus:
		reply(api.Status{Cluster: &api.Cluster{ID: "c0ffee", Epoch: 2, LeaderCID: 1},
			Nodes: []api.Node{{CID: 1, Name: "pmg5", IP: "10.0.0.1", Role: api.RoleMaster, State: api.StateActive,
				Sys: &api.SysInfo{UptimeSeconds: 100, Load1: 0.5}}}})
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
	v, ver, err := c.ConfigGet(ctx, key)
	if err != nil || ver != 17 || !bytes.Equal(v, binaryValue) {
		t.Fatalf("ConfigGet = %q, %d, %v", v, ver, err)
	}
	if r := d.last(); r.method != "GET" || r.path != api.PathConfig || r.query["key"][0] != key || len(r.query) != 1 {
		t.Errorf("get request = %+v", r)
	}

	wr, err := c.ConfigSet(ctx, key, binaryValue)
	if err != nil || wr.Key != key || wr.Version != 18 {
		t.Fatalf("ConfigSet = %+v, %v", wr, err)
	}
	if r := d.last(); r.method != "PUT" || r.path != api.PathConfig || r.query["key"][0] != key ||
		!bytes.Equal(r.body, binaryValue) || r.ctype != "application/octet-stream" {
		t.Errorf("set request = %+v", r)
	}

	if wr, err = c.ConfigSet(ctx, "empty", []byte{}); err != nil || wr.Version != 18 {
		t.Fatalf("ConfigSet empty = %+v, %v", wr, err)
	}
	if r := d.last(); r.method != "PUT" || len(r.body) != 0 {
		t.Errorf("empty set request = %+v", r)
	}

	wr, err = c.ConfigDelete(ctx, key)
	if err != nil || wr.Key != key || wr.Version != 19 {
		t.Fatalf("ConfigDelete = %+v, %v", wr, err)
	}
	if r := d.last(); r.method != "DELETE" || r.path != api.PathConfig || r.query["key"][0] != key {
		t.Errorf("delete request = %+v", r)
	}

	cl, err := c.ConfigList(ctx, "mail/")
	if err != nil || len(cl.Entries) != 1 || cl.Entries[0].Key != "mail/a" {
		t.Fatalf("ConfigList = %+v, %v", cl, err)
	}
	if r := d.last(); r.method != "GET" || r.path != api.PathConfigList || r.query["prefix"][0] != "mail/" {
		t.Errorf("list request = %+v", r)
	}
	if _, err := c.ConfigList(ctx, ""); err != nil {
		t.Fatal(err)
	}
	if r := d.last(); r.rawQuery != "" {
		t.Errorf("list without prefix sent query %q", r.rawQuery)
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
	_, _, err = c.ConfigGet(context.Background(), "k")
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
	if _, _, err := NewClient(path).ConfigGet(context.Background(), "k"); err == nil {
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
}
