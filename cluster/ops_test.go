package cluster

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/fsm"
	"github.com/pmgcm/pmgcm/mailstore"
)

// opsHandler is a fakeHandler that also serves the operator tools.
type opsHandler struct {
	fakeHandler
	gotIndex uint64
	gotWait  time.Duration
	gotMail  MailCheckRequest
	gotOn    bool
}

func (o *opsHandler) CheckState(ctx context.Context, index uint64) (StateCheck, error) {
	o.gotIndex = index
	if dl, ok := ctx.Deadline(); ok {
		o.gotWait = time.Until(dl).Round(time.Second)
	}
	return StateCheck{StateHash: fsm.StateHash{Index: index, Format: 2, SHA256: "ab", Entries: 3}, Applied: index}, nil
}

func (o *opsHandler) CheckMail(_ context.Context, req MailCheckRequest) (MailCheck, error) {
	o.gotMail = req
	mc := MailCheck{Digest: mailstore.CheckDigest{Messages: 1, SHA256: "cd"}}
	if req.Bucket >= 0 {
		mc.Entries = []mailstore.CheckEntry{{ID: "1-1", SHA256: "ef", State: "quarantined", Body: mailstore.BodyOK}}
	}
	return mc, nil
}

func (o *opsHandler) SetMaintenance(_ context.Context, on bool) (api.MaintenanceResponse, error) {
	o.gotOn = on
	return api.MaintenanceResponse{CID: 4, Name: "n4", On: on}, nil
}

func TestOpsServiceAndClient(t *testing.T) {
	h := &opsHandler{}
	srv := httptest.NewServer(NewService(h, testWriteErr).RPC())
	defer srv.Close()
	c := NewClient(srv.Client())
	addr := strings.TrimPrefix(srv.URL, "http://")
	ctx := context.Background()

	sc, err := c.CheckState(ctx, addr, 42, 5*time.Second)
	if err != nil || sc.Index != 42 || sc.SHA256 != "ab" || h.gotIndex != 42 || h.gotWait != 5*time.Second {
		t.Fatalf("CheckState: %+v %v (index %d, wait %s)", sc, err, h.gotIndex, h.gotWait)
	}
	since := time.Unix(1700000000, 5)
	mc, err := c.CheckMail(ctx, addr, MailCheckRequest{Since: since, Verify: true, Bucket: 7})
	if err != nil || mc.Digest.SHA256 != "cd" || len(mc.Entries) != 1 || h.gotMail.Bucket != 7 || !h.gotMail.Verify || !h.gotMail.Since.Equal(since) {
		t.Fatalf("CheckMail: %+v %v, asked %+v", mc, err, h.gotMail)
	}
	if _, err := c.CheckMail(ctx, addr, MailCheckRequest{Bucket: -1}); err != nil || h.gotMail.Bucket != -1 || !h.gotMail.Since.IsZero() {
		t.Fatalf("CheckMail of all: %v, asked %+v", err, h.gotMail)
	}
	mr, err := c.SetMaintenance(ctx, addr, true)
	if err != nil || !mr.On || !h.gotOn {
		t.Fatalf("SetMaintenance: %+v %v", mr, err)
	}

	// Bad queries are refused as bad requests, not answered.
	for _, q := range []string{PathCheckState + "?index=x&wait=1s", PathCheckState + "?index=1&wait=1h",
		PathCheckMail + "?since=0&bucket=256", PathCheckMail + "?since=x"} {
		resp, err := srv.Client().Get(srv.URL + q)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: %s, want 400", q, resp.Status)
		}
	}
}

// TestOpsNotSupported: a node of the first release, whose service has no operator tools,
// answers 404, which NotSupported recognizes; a 404 about a missing thing does not count.
func TestOpsNotSupported(t *testing.T) {
	old := httptest.NewServer(NewService(&fakeHandler{}, testWriteErr).RPC()) // no OpsHandler
	defer old.Close()
	c := NewClient(old.Client())
	addr := strings.TrimPrefix(old.URL, "http://")
	_, err := c.CheckState(context.Background(), addr, 1, time.Second)
	if !NotSupported(err) {
		t.Fatalf("CheckState on an old node: %v, want NotSupported", err)
	}
	if _, err := c.SetMaintenance(context.Background(), addr, true); !NotSupported(err) {
		t.Fatalf("SetMaintenance on an old node: %v", err)
	}
	notFound := &RemoteError{Status: http.StatusNotFound, E: api.Error{Code: api.CodeNotFound, Message: "no such key"}}
	if NotSupported(notFound) || NotSupported(nil) {
		t.Fatal("NotSupported took a plain not-found for an old version")
	}
	if PathCheckState != "/rpc/v1/check/state" || PathCheckMail != "/rpc/v1/check/mail" || PathMaintenance != "/rpc/v1/maintenance" {
		t.Fatal("operator tool paths changed: nodes of other versions call them")
	}
}

// FuzzOpsService feeds arbitrary queries to the check paths and bodies to the
// maintenance path: the service answers (never panics) and refuses what it cannot parse.
func FuzzOpsService(f *testing.F) {
	f.Add("index=1&wait=1s", []byte(`{"on":true}`))
	f.Add("since=0&bucket=7&verify=1", []byte(`{`))
	f.Add("index=-1&wait=-5s&bucket=999999999999999999999", []byte{0xff})
	h := NewService(&opsHandler{}, testWriteErr).RPC()
	f.Fuzz(func(t *testing.T, query string, body []byte) {
		for _, r := range []*http.Request{
			httptest.NewRequest(http.MethodGet, PathCheckState, nil),
			httptest.NewRequest(http.MethodGet, PathCheckMail, nil),
			httptest.NewRequest(http.MethodPost, PathMaintenance, bytes.NewReader(body)),
		} {
			r.URL.RawQuery = query
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			if rec.Code != http.StatusOK && rec.Code != http.StatusBadRequest {
				t.Fatalf("%s?%q: status %d", r.URL.Path, query, rec.Code)
			}
		}
	})
}
