package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/fsm"
)

// TestPathsOfTheFirstRelease: the paths are those a 1ca55cd node serves and calls.
func TestPathsOfTheFirstRelease(t *testing.T) {
	for got, want := range map[string]string{
		PathNode: "/rpc/v1/node", PathApply: "/rpc/v1/apply", PathReadIndex: "/rpc/v1/readindex",
		PathAdmit: "/rpc/v1/admit", PathDelete: "/rpc/v1/delete", PathTransfer: "/rpc/v1/transfer",
		PathReadmit: "/rpc/v1/readmit", PathRecordCert: "/rpc/v1/record-cert", PathRenewCert: "/rpc/v1/renew-cert",
		JoinPathInfo: "/join/v1/info", JoinPathAdmit: "/join/v1/admit", JoinPathMembership: "/join/v1/membership",
		JoinPathReadmit: "/join/v1/readmit",
	} {
		if got != want {
			t.Errorf("path %q, the first release uses %q", got, want)
		}
	}
	if ProtocolVersion != 2 || MinProtocolVersion > ProtocolVersion || MaxProtocolVersion < ProtocolVersion {
		t.Errorf("protocol version %d in [%d, %d]; the first release speaks 2", ProtocolVersion, MinProtocolVersion, MaxProtocolVersion)
	}
}

// TestWireJSON: the JSON of every wire type is byte for byte that of 1ca55cd.
func TestWireJSON(t *testing.T) {
	for _, c := range []struct {
		v    any
		want string
	}{
		{JoinInfo{ClusterID: "c", Name: "n", CID: 2, ProtocolVersion: 2, StateFormat: 1},
			`{"cluster_id":"c","name":"n","cid":2,"protocol_version":2,"state_format":1}`},
		{AdmitRequest{Token: "t", Name: "n", IP: "127.0.0.2", Port: 8006, PublicKeyPEM: []byte("k"), ProtocolVersion: 2, StateFormat: 1},
			`{"token":"t","name":"n","ip":"127.0.0.2","port":8006,"public_key_pem":"aw==","protocol_version":2,"state_format":1}`},
		// The range of a newer build: fields a first-release node ignores.
		{JoinInfo{ClusterID: "c", Name: "n", CID: 2, ProtocolVersion: 2, StateFormat: 1, ProtocolMin: 2, ProtocolMax: 3},
			`{"cluster_id":"c","name":"n","cid":2,"protocol_version":2,"state_format":1,"protocol_min":2,"protocol_max":3}`},
		{AdmitRequest{Token: "t", ProtocolVersion: 2, StateFormat: 1, ProtocolMin: 2, ProtocolMax: 3},
			`{"token":"t","name":"","ip":"","port":0,"public_key_pem":null,"protocol_version":2,"state_format":1,"protocol_min":2,"protocol_max":3}`},
		{Admission{ClusterID: "c", Epoch: 1, CID: 2, Index: 9, MasterAddress: "127.0.0.1:8006"},
			`{"cluster_id":"c","epoch":1,"cid":2,"cert_pem":null,"ca_cert_pem":null,"members":null,"index":9,"master_address":"127.0.0.1:8006"}`},
		{Membership{ClusterID: "c", Epoch: 1, Member: true, CID: 2, Applied: 5},
			`{"cluster_id":"c","epoch":1,"member":true,"cid":2,"fenced":false,"applied":5}`},
		{Membership{MasterCID: 1, MasterName: "m", MasterIP: "127.0.0.1"},
			`{"cluster_id":"","epoch":0,"member":false,"cid":0,"fenced":false,"applied":0,"master_cid":1,"master_name":"m","master_ip":"127.0.0.1"}`},
		{ApplyResult{Index: 1, Version: 2, CID: 3}, `{"index":1,"version":2,"cid":3}`},
		{ReadIndexResult{Index: 7}, `{"index":7}`},
		{TransferRequest{CID: 3}, `{"cid":3}`},
		{FingerprintRequest{Fingerprint: "ab"}, `{"fingerprint":"ab"}`},
		{ReadmitRequest{Fingerprint: "ab"}, `{"fingerprint":"ab"}`},
		// A newer build's re-admission: fields a first-release node ignores.
		{ReadmitRequest{Fingerprint: "ab", Version: "v", Level: 3}, `{"fingerprint":"ab","version":"v","level":3}`},
		{CertRecord{CID: 3, CertPEM: []byte("c")}, `{"cid":3,"cert_pem":"Yw=="}`},
		{api.DeleteRequest{CID: 3}, `{"cid":3}`},
	} {
		b, err := json.Marshal(c.v)
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != c.want {
			t.Errorf("%T: %s, the first release sends %s", c.v, b, c.want)
		}
	}
}

// fakeHandler answers every request with fixed values and records what it was asked.
type fakeHandler struct {
	cid   uint64
	fp    string
	level int
	relay bool
	err   error
}

func (f *fakeHandler) NodeInfo() api.Node { return api.Node{CID: 4, Name: "n4"} }
func (f *fakeHandler) Apply(_ context.Context, cmd fsm.Command) (ApplyResult, error) {
	if f.err != nil {
		return ApplyResult{}, f.err
	}
	return ApplyResult{Index: 11, Version: 3}, nil
}
func (f *fakeHandler) ReadIndex(context.Context) (uint64, error) { return 12, f.err }
func (f *fakeHandler) Admit(_ context.Context, req AdmitRequest, relay bool) (*Admission, error) {
	f.relay = relay
	return &Admission{CID: 5, ClusterID: req.Name}, f.err
}
func (f *fakeHandler) Delete(_ context.Context, cid uint64) (*api.DeleteResponse, error) {
	f.cid = cid
	return &api.DeleteResponse{CID: cid}, f.err
}
func (f *fakeHandler) Transfer(_ context.Context, cid uint64) error { f.cid = cid; return f.err }
func (f *fakeHandler) ReadmitMember(_ context.Context, req ReadmitRequest) (*Admission, error) {
	f.fp, f.level = req.Fingerprint, req.Level
	return &Admission{CID: 6}, f.err
}
func (f *fakeHandler) RecordCert(_ context.Context, req CertRecord) (uint64, error) {
	f.cid = req.CID
	return 13, f.err
}
func (f *fakeHandler) RenewCert(context.Context) (api.RenewedCert, error) {
	return api.RenewedCert{CID: 7}, f.err
}
func (f *fakeHandler) JoinInfo() JoinInfo {
	return JoinInfo{Name: "n", ProtocolVersion: ProtocolVersion}
}
func (f *fakeHandler) CheckMembership(fp string) Membership {
	f.fp = fp
	return Membership{Member: true, CID: 8}
}

// testWriteErr is an ErrorWriter as the daemon's: ErrBadRequest is 400, a RemoteError
// passes unchanged, anything else is 500.
func testWriteErr(w http.ResponseWriter, err error) {
	var re *RemoteError
	status, e := http.StatusInternalServerError, api.Error{Code: api.CodeInternal, Message: err.Error()}
	switch {
	case errors.As(err, &re):
		status, e = re.Status, re.E
	case errors.Is(err, ErrBadRequest), errors.Is(err, fsm.ErrBadCommand):
		status, e.Code = http.StatusBadRequest, api.CodeBadRequest
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(e)
}

// TestServiceAndClient: every typed request reaches its Handler method and its answer
// comes back; a node's error comes back as a RemoteError with its code.
func TestServiceAndClient(t *testing.T) {
	h := &fakeHandler{}
	svc := NewService(h, testWriteErr)
	rpc := httptest.NewServer(svc.RPC())
	defer rpc.Close()
	join := httptest.NewServer(svc.Join())
	defer join.Close()
	c := NewClient(rpc.Client())
	jc := NewClient(join.Client())
	ra, ja := strings.TrimPrefix(rpc.URL, "http://"), strings.TrimPrefix(join.URL, "http://")
	ctx := context.Background()

	if n, err := c.Node(ctx, ra); err != nil || n.CID != 4 {
		t.Errorf("Node: %+v, %v", n, err)
	}
	b, _ := fsm.Encode(&fsm.ConfigSet{Key: "k", Value: []byte("v")})
	if r, err := c.Apply(ctx, ra, b); err != nil || r.Index != 11 || r.Version != 3 {
		t.Errorf("Apply: %+v, %v", r, err)
	}
	if i, err := c.ReadIndex(ctx, ra); err != nil || i != 12 {
		t.Errorf("ReadIndex: %d, %v", i, err)
	}
	if a, err := c.Admit(ctx, ra, AdmitRequest{Name: "x"}); err != nil || a.CID != 5 || a.ClusterID != "x" || h.relay {
		t.Errorf("Admit: %+v, %v, relay %v", a, err, h.relay)
	}
	if a, err := jc.JoinAdmit(ctx, ja, AdmitRequest{Name: "y"}); err != nil || a.CID != 5 || !h.relay {
		t.Errorf("JoinAdmit: %+v, %v, relay %v", a, err, h.relay)
	}
	if d, err := c.Delete(ctx, ra, 9); err != nil || d.CID != 9 || h.cid != 9 {
		t.Errorf("Delete: %+v, %v", d, err)
	}
	if err := c.Transfer(ctx, ra, 10); err != nil || h.cid != 10 {
		t.Errorf("Transfer: %v, cid %d", err, h.cid)
	}
	if a, err := c.Readmit(ctx, ra, ReadmitRequest{Fingerprint: "fp1", Level: 3}); err != nil || a.CID != 6 || h.fp != "fp1" || h.level != 3 {
		t.Errorf("Readmit: %+v, %v", a, err)
	}
	if i, err := c.RecordCert(ctx, ra, CertRecord{CID: 14}); err != nil || i != 13 || h.cid != 14 {
		t.Errorf("RecordCert: %d, %v", i, err)
	}
	var rc api.RenewedCert
	if err := c.RenewCert(ctx, ra, &rc); err != nil || rc.CID != 7 {
		t.Errorf("RenewCert: %+v, %v", rc, err)
	}
	if i, err := jc.JoinInfo(ctx, ja); err != nil || i.Name != "n" {
		t.Errorf("JoinInfo: %+v, %v", i, err)
	}
	if m, err := jc.CheckMembership(ctx, ja, "fp2"); err != nil || !m.Member || h.fp != "fp2" {
		t.Errorf("CheckMembership: %+v, %v", m, err)
	}
	// Without a certificate (no mux below httptest), re-admission on the join channel
	// is a bad request.
	if _, err := jc.JoinReadmit(ctx, ja, "v", 3); Code(err) != api.CodeBadRequest {
		t.Errorf("JoinReadmit without a certificate: %v", err)
	}

	h.err = &RemoteError{Status: http.StatusServiceUnavailable, E: api.Error{Code: api.CodeNotLeader, Message: "not the master"}}
	_, err := c.ReadIndex(ctx, ra)
	var re *RemoteError
	if !errors.As(err, &re) || re.Status != http.StatusServiceUnavailable || re.Code() != api.CodeNotLeader || re.NotSent {
		t.Errorf("an answered error came back as %#v", err)
	}
}

// TestRequestBounds: a request body over MaxRequestBytes, or not JSON, is a bad
// request; so is an apply body that is no command.
func TestRequestBounds(t *testing.T) {
	srv := httptest.NewServer(NewService(&fakeHandler{}, testWriteErr).RPC())
	defer srv.Close()
	for _, c := range []struct {
		path string
		body []byte
	}{
		{PathDelete, []byte(`{"cid":` + strings.Repeat(" ", MaxRequestBytes) + `1}`)},
		{PathTransfer, []byte(`not json`)},
		{PathApply, []byte{fsm.EncodingVersion}},
		{PathApply, bytes.Repeat([]byte{1}, MaxCommandBytes+1)},
	} {
		resp, err := srv.Client().Post(srv.URL+c.path, "application/json", bytes.NewReader(c.body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s with %d bytes: %s, want 400", c.path, len(c.body), resp.Status)
		}
	}
}

// FuzzService feeds arbitrary bodies to every POST path: the service answers (never
// panics) and refuses what it cannot decode.
func FuzzService(f *testing.F) {
	f.Add(0, []byte(`{"cid":1}`))
	f.Add(1, []byte(`{"fingerprint":"ab"}`))
	f.Add(2, []byte{1, 2, 3})
	svc := NewService(&fakeHandler{}, testWriteErr)
	paths := []struct {
		h    http.Handler
		path string
	}{
		{svc.RPC(), PathApply}, {svc.RPC(), PathAdmit}, {svc.RPC(), PathDelete}, {svc.RPC(), PathTransfer},
		{svc.RPC(), PathReadmit}, {svc.RPC(), PathRecordCert}, {svc.Join(), JoinPathAdmit}, {svc.Join(), JoinPathMembership},
	}
	f.Fuzz(func(t *testing.T, which int, body []byte) {
		p := paths[uint(which)%uint(len(paths))]
		rec := httptest.NewRecorder()
		p.h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, p.path, bytes.NewReader(body)))
		if rec.Code != http.StatusOK && rec.Code != http.StatusBadRequest && rec.Code != http.StatusInternalServerError {
			t.Fatalf("%s: status %d", p.path, rec.Code)
		}
	})
}

// answerTransport answers every request with status and body, without a network.
type answerTransport struct {
	status int
	body   []byte
}

func (a answerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	return &http.Response{StatusCode: a.status, Status: http.StatusText(a.status), Body: io.NopCloser(bytes.NewReader(a.body)),
		Header: http.Header{}, Request: r}, nil
}

// FuzzClientAnswers feeds arbitrary answers to the Client's decoders: each gives a value
// or an error (a RemoteError for a non-2xx status), never a panic.
func FuzzClientAnswers(f *testing.F) {
	f.Add(200, []byte(`{"cluster_id":"c","epoch":1,"cid":2,"members":[{"cid":1}]}`))
	f.Add(503, []byte(`{"code":"not_leader","message":"no"}`))
	f.Add(500, []byte(`<html>`))
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		if status < 100 || status > 599 {
			status = 200
		}
		c := NewClient(&http.Client{Transport: answerTransport{status: status, body: body}})
		ctx := context.Background()
		_, err := c.JoinAdmit(ctx, "127.0.0.1:1", AdmitRequest{})
		if status/100 != 2 {
			var re *RemoteError
			if !errors.As(err, &re) || re.Status != status {
				t.Fatalf("status %d answered %v", status, err)
			}
		}
		_, _ = c.CheckMembership(ctx, "127.0.0.1:1", "fp")
		_, _ = c.Node(ctx, "127.0.0.1:1")
	})
}
