package client

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/api/client/clienttest"
)

func TestClientWire(t *testing.T) {
	d := &clienttest.Daemon{}
	c := New(clienttest.Serve(t, d))
	ctx := context.Background()

	st, err := c.Status(ctx)
	if err != nil || st.Cluster.ID != "c0ffee" || st.Nodes[0].Sys.Load1 != 0.5 {
		t.Fatalf("Status = %+v, %v", st, err)
	}
	if r := d.Last(); r.Method != "GET" || r.Path != api.PathStatus || r.RawQuery != "" || r.Accept != "application/json" {
		t.Errorf("status request = %+v", r)
	}

	cr, err := c.Create(ctx)
	if err != nil || cr.ClusterID != "c0ffee" || cr.CID != 1 || cr.Fingerprint != "FP" {
		t.Fatalf("Create = %+v, %v", cr, err)
	}
	if r := d.Last(); r.Method != "POST" || r.Path != api.PathCreate || len(r.Body) != 0 {
		t.Errorf("create request = %+v", r)
	}

	// A key with slashes, spaces and query metacharacters travels in ?key= unharmed.
	key := "mail/relay host&x=1 #ü"
	v, err := c.ConfigGet(ctx, key, ReadOptions{})
	if err != nil || v.Version != 17 || !bytes.Equal(v.Value, clienttest.BinaryValue) || v.Read != (ReadInfo{}) {
		t.Fatalf("ConfigGet = %+v, %v", v, err)
	}
	if r := d.Last(); r.Method != "GET" || r.Path != api.PathConfig || r.Query["key"][0] != key || len(r.Query) != 1 {
		t.Errorf("get request = %+v", r)
	}

	wr, err := c.ConfigSet(ctx, key, clienttest.BinaryValue, WriteOptions{})
	if err != nil || wr.Key != key || wr.Version != 18 {
		t.Fatalf("ConfigSet = %+v, %v", wr, err)
	}
	if r := d.Last(); r.Method != "PUT" || r.Path != api.PathConfig || r.Query["key"][0] != key ||
		!bytes.Equal(r.Body, clienttest.BinaryValue) || r.ContentType != "application/octet-stream" {
		t.Errorf("set request = %+v", r)
	}

	if r := d.Last(); len(r.Query) != 1 {
		t.Errorf("unconditional set sent %q", r.RawQuery)
	}

	if wr, err = c.ConfigSet(ctx, "empty", []byte{}, WriteOptions{}); err != nil || wr.Version != 18 {
		t.Fatalf("ConfigSet empty = %+v, %v", wr, err)
	}
	if r := d.Last(); r.Method != "PUT" || len(r.Body) != 0 {
		t.Errorf("empty set request = %+v", r)
	}

	wr, err = c.ConfigDelete(ctx, key, WriteOptions{})
	if err != nil || wr.Key != key || wr.Version != 19 {
		t.Fatalf("ConfigDelete = %+v, %v", wr, err)
	}
	if r := d.Last(); r.Method != "DELETE" || r.Path != api.PathConfig || r.Query["key"][0] != key || len(r.Query) != 1 {
		t.Errorf("delete request = %+v", r)
	}

	cl, ri, err := c.ConfigList(ctx, "mail/", ReadOptions{})
	if err != nil || len(cl.Entries) != 1 || cl.Entries[0].Key != "mail/a" || ri.Stale {
		t.Fatalf("ConfigList = %+v, %+v, %v", cl, ri, err)
	}
	if r := d.Last(); r.Method != "GET" || r.Path != api.PathConfigList || r.Query["prefix"][0] != "mail/" || len(r.Query) != 1 {
		t.Errorf("list request = %+v", r)
	}
	if _, _, err := c.ConfigList(ctx, "", ReadOptions{}); err != nil {
		t.Fatal(err)
	}
	if r := d.Last(); r.RawQuery != "" {
		t.Errorf("list without prefix sent query %q", r.RawQuery)
	}
}

func TestClientWireJoin(t *testing.T) {
	d := &clienttest.Daemon{}
	c := New(clienttest.Serve(t, d))
	ctx := context.Background()

	p, err := c.JoinProbe(ctx, "10.0.0.1")
	if err != nil || p.Address != "10.0.0.1:8006" || p.Fingerprint != "FP" || p.ClusterID != "c0ffee" || p.Name != "pmg5" || p.CID != 1 {
		t.Fatalf("JoinProbe = %+v, %v", p, err)
	}
	if r := d.Last(); r.Method != "POST" || r.Path != api.PathJoinProbe || r.RawQuery != "" ||
		r.ContentType != "application/json" || string(r.Body) != `{"master":"10.0.0.1"}` {
		t.Errorf("probe request = %+v (body %s)", r, r.Body)
	}

	req := api.JoinRequest{Master: "10.0.0.1:8006", Fingerprint: "FP", Token: "tok"}
	jr, err := c.Join(ctx, req)
	if err != nil || *jr != (api.JoinResponse{ClusterID: "c0ffee", CID: 2, Name: "pmg6", MasterAddress: "10.0.0.1:8006"}) {
		t.Fatalf("Join = %+v, %v", jr, err)
	}
	if r := d.Last(); r.Method != "POST" || r.Path != api.PathJoin || r.ContentType != "application/json" ||
		string(r.Body) != `{"master":"10.0.0.1:8006","fingerprint":"FP","token":"tok"}` {
		t.Errorf("join request = %+v (body %s)", r, r.Body)
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
	if r := d.Last(); r.Method != "GET" || r.Path != api.PathJoinCmd || r.RawQuery != "" || len(r.Body) != 0 {
		t.Errorf("join-cmd request = %+v", r)
	}
	if jc, err = c.JoinCmd(ctx, true); err != nil || jc.Token != "new" {
		t.Fatalf("JoinCmd rotate = %+v, %v", jc, err)
	}
	if r := d.Last(); r.Method != "POST" || r.Path != api.PathJoinCmd || r.RawQuery != "rotate=1" || len(r.Body) != 0 {
		t.Errorf("join-cmd rotate request = %+v", r)
	}

	dr, err := c.Delete(ctx, 3, false)
	if err != nil || *dr != (api.DeleteResponse{CID: 3, Name: "pmg7", IP: "10.0.0.3"}) {
		t.Fatalf("Delete = %+v, %v", dr, err)
	}
	if r := d.Last(); r.Method != "POST" || r.Path != api.PathDelete || r.ContentType != "application/json" || string(r.Body) != `{"cid":3}` {
		t.Errorf("delete request = %+v (body %s)", r, r.Body)
	}
	if dr, err = c.Delete(ctx, 3, true); err != nil || dr.CID != 3 {
		t.Fatalf("Delete --force = %+v, %v", dr, err)
	}
	if r := d.Last(); r.Path != api.PathDelete || string(r.Body) != `{"cid":3,"force":true}` {
		t.Errorf("forced delete request = %+v (body %s)", r, r.Body)
	}
	if _, err := c.Delete(ctx, 9, false); !errors.As(err, &ae) || ae.Code != api.CodeNotFound || ae.Status != 404 {
		t.Errorf("Delete of an unknown cid: %#v", err)
	}
}

func TestClientWirePromoteSync(t *testing.T) {
	d := &clienttest.Daemon{}
	c := New(clienttest.Serve(t, d))
	ctx := context.Background()

	pr, err := c.Promote(ctx, false)
	if err != nil || pr.CID != 1 || pr.Name != "pmg5" || !pr.AlreadyMaster || pr.Forced || pr.Epoch != 2 {
		t.Fatalf("Promote = %+v, %v", pr, err)
	}
	if r := d.Last(); r.Method != "POST" || r.Path != api.PathPromote || r.RawQuery != "" ||
		r.ContentType != "application/json" || string(r.Body) != `{}` {
		t.Errorf("promote request = %+v (body %s)", r, r.Body)
	}
	pr, err = c.Promote(ctx, true)
	if err != nil || !pr.Forced || pr.Epoch != 3 || len(pr.Fenced) != 2 || pr.Fenced[0] != 2 || pr.Fenced[1] != 3 {
		t.Fatalf("Promote force = %+v, %v", pr, err)
	}
	if r := d.Last(); r.Path != api.PathPromote || string(r.Body) != `{"force":true}` {
		t.Errorf("forced promote request = %+v (body %s)", r, r.Body)
	}

	sr, err := c.Sync(ctx, "")
	if err != nil || *sr != (api.SyncResponse{MasterCID: 1, Epoch: 2, AppliedIndex: 42}) {
		t.Fatalf("Sync = %+v, %v", sr, err)
	}
	if r := d.Last(); r.Method != "POST" || r.Path != api.PathSync || r.ContentType != "application/json" || string(r.Body) != `{}` {
		t.Errorf("sync request = %+v (body %s)", r, r.Body)
	}
	sr, err = c.Sync(ctx, "10.0.0.1")
	if err != nil || *sr != (api.SyncResponse{Readmitted: true, MasterCID: 1, Epoch: 3, AppliedIndex: 40}) {
		t.Fatalf("Sync --master_ip = %+v, %v", sr, err)
	}
	if r := d.Last(); r.Path != api.PathSync || string(r.Body) != `{"master_ip":"10.0.0.1"}` {
		t.Errorf("sync --master_ip request = %+v (body %s)", r, r.Body)
	}
	_, err = c.Sync(ctx, "10.0.0.9")
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != 409 || ae.Code != api.CodeNotLeader || err.Error() != "10.0.0.9 is not the master\nthe master is 10.0.0.1" {
		t.Errorf("Sync with a non-master: %#v", err)
	}
}

func TestClientAPIError(t *testing.T) {
	d := &clienttest.Daemon{FailStatus: http.StatusConflict,
		FailBody: `{"code":"cluster_exists","error":"already in cluster c0ffee","hint":"run pmgcm status"}`}
	c := New(clienttest.Serve(t, d))
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
	d.FailStatus, d.FailBody = http.StatusBadGateway, "upstream broke\n"
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
	if _, err := New(path).ConfigGet(context.Background(), "k", ReadOptions{}); err == nil {
		t.Error("no error for a missing version header")
	}
}

func TestClientWireStaleAndCAS(t *testing.T) {
	d := &clienttest.Daemon{}
	c := New(clienttest.Serve(t, d))
	ctx := context.Background()
	stale := ReadInfo{Stale: true, AppliedIndex: 16, LastContact: "1.5s"}

	v, err := c.ConfigGet(ctx, "mail/relay", ReadOptions{Stale: true})
	if err != nil || v.Version != 17 || !bytes.Equal(v.Value, clienttest.BinaryValue) || v.Read != stale {
		t.Fatalf("stale ConfigGet = %+v, %v", v, err)
	}
	if r := d.Last(); r.Method != "GET" || r.Path != api.PathConfig || r.Query["key"][0] != "mail/relay" ||
		r.Query["stale"][0] != "1" || len(r.Query) != 2 {
		t.Errorf("stale get request = %+v", r)
	}

	cl, ri, err := c.ConfigList(ctx, "mail/", ReadOptions{Stale: true})
	if err != nil || len(cl.Entries) != 1 || ri != stale {
		t.Fatalf("stale ConfigList = %+v, %+v, %v", cl, ri, err)
	}
	if r := d.Last(); r.Path != api.PathConfigList || r.Query["prefix"][0] != "mail/" || r.Query["stale"][0] != "1" || len(r.Query) != 2 {
		t.Errorf("stale list request = %+v", r)
	}
	if _, _, err := c.ConfigList(ctx, "", ReadOptions{Stale: true}); err != nil {
		t.Fatal(err)
	}
	if r := d.Last(); r.RawQuery != "stale=1" {
		t.Errorf("stale list without prefix sent %q", r.RawQuery)
	}

	for _, n := range []uint64{17, 0} {
		wr, err := c.ConfigSet(ctx, "k", []byte("v"), WriteOptions{IfVersion: &n})
		if r := d.Last(); r.Method != "PUT" || r.Query["key"][0] != "k" || r.Query["if_version"][0] != fmt.Sprint(n) || len(r.Query) != 2 {
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
		if r := d.Last(); r.Method != "DELETE" || r.Query["if_version"][0] != fmt.Sprint(n) || len(r.Query) != 2 {
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
	d := &clienttest.Daemon{}
	c := New(clienttest.Serve(t, d))
	ctx := context.Background()

	wr, err := c.ConfigWatch(ctx, "mail/", 0, 25*time.Second)
	if err != nil || wr.Next != 4 || wr.Reset || len(wr.Events) != 1 || wr.Events[0].Key != "mail/a" ||
		wr.Events[0].Version != 3 || wr.Events[0].Value == nil || *wr.Events[0].Value != "x" {
		t.Fatalf("ConfigWatch from 0 = %+v, %v", wr, err)
	}
	if r := d.Last(); r.Method != "GET" || r.Path != api.PathConfigWatch || r.Query["prefix"][0] != "mail/" ||
		r.Query["from"][0] != "0" || r.Query["wait"][0] != "25s" || len(r.Query) != 3 || len(r.Body) != 0 {
		t.Errorf("watch request = %+v", r)
	}

	wr, err = c.ConfigWatch(ctx, "", 5, 1500*time.Millisecond)
	if err != nil || !wr.Reset || wr.Next != 9 || len(wr.Events) != 1 || wr.Events[0].ValueBase64 != "AP/+CmGADQ==" {
		t.Fatalf("ConfigWatch reset = %+v, %v", wr, err)
	}
	if r := d.Last(); r.RawQuery != "from=5&wait=1.5s" {
		t.Errorf("watch without prefix sent %q", r.RawQuery)
	}

	if _, err = c.ConfigWatch(ctx, "", 18446744073709551615, 0); err != nil {
		t.Fatal(err)
	}
	if r := d.Last(); r.RawQuery != "from=18446744073709551615" {
		t.Errorf("watch with the daemon's default wait sent %q", r.RawQuery)
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
	if _, err := New(path).ConfigGet(context.Background(), "k", ReadOptions{Stale: true}); err == nil ||
		!strings.Contains(err.Error(), api.HeaderAppliedIndex) {
		t.Errorf("bad applied index header: %v", err)
	}
}

func TestUserAgent(t *testing.T) {
	d := &clienttest.Daemon{}
	path := clienttest.Serve(t, d)
	ctx := context.Background()
	if _, err := New(path).Status(ctx); err != nil {
		t.Fatal(err)
	}
	if ua := d.Last().UserAgent; ua != defaultUserAgent {
		t.Errorf("default User-Agent %q, want %q", ua, defaultUserAgent)
	}
	if _, err := New(path, WithUserAgent("pmgcm/1.2.3")).Status(ctx); err != nil {
		t.Fatal(err)
	}
	if ua := d.Last().UserAgent; ua != "pmgcm/1.2.3" {
		t.Errorf("User-Agent %q, want pmgcm/1.2.3", ua)
	}
}

// TestClientConnectionClosed: a daemon that closes the connection without an answer to
// the request it read (stopping) gives an error that says
// so and what to do, for reads and for changes.
func TestClientConnectionClosed(t *testing.T) {
	// Read the request, then close without an answer.
	path := serveUnix(t, func(conn net.Conn) {
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		r := bufio.NewReader(conn)
		for {
			line, err := r.ReadString('\n')
			if err != nil || line == "\r\n" {
				return
			}
		}
	})
	c := New(path)
	_, err := c.Status(context.Background())
	if err == nil || !strings.Contains(err.Error(), "closed the connection before it answered") ||
		!strings.Contains(err.Error(), "try again") {
		t.Errorf("status from a daemon that closes: %v", err)
	}
	_, err = c.Create(context.Background())
	if err == nil || !strings.Contains(err.Error(), "may or may not have been made") {
		t.Errorf("create from a daemon that closes: %v", err)
	}
}
