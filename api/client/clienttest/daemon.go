// Package clienttest serves a fake pmgclusterd on a unix socket, for the tests of package
// client and of the commands that use it (package cli): Daemon answers every path of
// package api with fixed data and records the requests. It imports only package api;
// never daemon.
package clienttest

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
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

// BinaryValue is the value of every key: not valid UTF-8, no trailing newline. Its version
// is 17.
var BinaryValue = []byte{0x00, 0xff, 0xfe, '\n', 'a', 0x80, 0x0d}

// QuarantineBody is the quarantined message q1: CRLF line ends, 8-bit bytes, no trailing
// newline.
var QuarantineBody = []byte("From: alice@example.net\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\n\r\nbody \xff\xfe\r\nlast")

// QuarantineMessage is the index entry of QuarantineBody, the only quarantined message.
var QuarantineMessage = api.QuarantineMessage{
	ID: "q1", OriginCID: 2, From: "alice@example.net", To: []string{"bob@example.com", "carol@example.com"},
	Subject: "café", Size: int64(len(QuarantineBody)), SHA256: sha256hex(QuarantineBody), State: api.MailQuarantined,
	Received: time.Date(2025, 3, 1, 12, 30, 45, 0, time.UTC),
}

func sha256hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// Request is what the Daemon recorded of one request.
type Request struct {
	Method, Path, RawQuery string
	// ContentType and Accept are the request's headers.
	ContentType, Accept string
	// UserAgent is the request's User-Agent header.
	UserAgent string
	Query     map[string][]string
	Body      []byte
}

// Daemon is an http.Handler that answers like pmgclusterd per package api, with fixed
// data (BinaryValue, QuarantineMessage, ...), and records the requests. The zero value is
// ready to use.
type Daemon struct {
	// FailStatus, when set, answers every request with this status and FailBody.
	FailStatus int
	FailBody   string

	mu   sync.Mutex
	seen []Request
}

// Last returns the last request the daemon received.
func (d *Daemon) Last() Request {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.seen[len(d.seen)-1]
}

// ServeHTTP records the request and answers it.
func (d *Daemon) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	d.mu.Lock()
	d.seen = append(d.seen, Request{Method: r.Method, Path: r.URL.Path, RawQuery: r.URL.RawQuery,
		ContentType: r.Header.Get("Content-Type"), Accept: r.Header.Get("Accept"),
		UserAgent: r.Header.Get("User-Agent"), Query: r.URL.Query(), Body: body})
	d.mu.Unlock()
	if r.Host != "pmgcm" {
		http.Error(w, "bad host "+r.Host, http.StatusBadRequest)
		return
	}
	if d.FailStatus != 0 {
		w.WriteHeader(d.FailStatus)
		io.WriteString(w, d.FailBody)
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
		w.Write(BinaryValue)
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
		m := QuarantineMessage
		if strings.Contains(m.From, q.Get("from")) && strings.Contains(strings.Join(m.To, ","), q.Get("to")) &&
			(q.Get("state") == "" || q.Get("state") == m.State) {
			msgs = append(msgs, m)
		}
		reply(msgs)
	case r.Method == http.MethodGet && r.URL.Path == api.PathQuarantineShow:
		switch r.URL.Query().Get("id") {
		case "q1":
			w.Header().Set(api.HeaderSHA256, QuarantineMessage.SHA256)
		case "corrupt": // the daemon states the checksum of another message
			w.Header().Set(api.HeaderSHA256, strings.Repeat("0", 64))
		case "nosum":
		default:
			w.WriteHeader(http.StatusNotFound)
			reply(api.Error{Code: api.CodeNotFound, Message: "no message " + r.URL.Query().Get("id")})
			return
		}
		w.Header().Set("Content-Type", "message/rfc822")
		w.Write(QuarantineBody)
	case r.Method == http.MethodPost && (r.URL.Path == api.PathQuarantineDelete || r.URL.Path == api.PathQuarantineRelease):
		if id := r.URL.Query().Get("id"); id != "q1" {
			w.WriteHeader(http.StatusNotFound)
			reply(api.Error{Code: api.CodeNotFound, Message: "no message " + id})
			return
		}
		m := QuarantineMessage
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

// Serve serves d on a unix socket in a temporary directory of t and returns its path; the
// server stops at the end of the test.
func Serve(t testing.TB, d *Daemon) string {
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
