package cli

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/api/client"
)

// fpFake is a fakeAPI that also renews certificates.
type fpFake struct {
	*fakeAPI
	resp   *api.UpdateFingerprintsResponse
	gotAll bool
}

func (f *fpFake) UpdateFingerprints(_ context.Context, all bool) (*api.UpdateFingerprintsResponse, error) {
	f.record("update-fingerprints")
	f.gotAll = all
	return f.resp, f.errFor("update-fingerprints")
}

var fpExpires = time.Date(2028, 3, 1, 12, 0, 0, 0, time.UTC)

func TestUpdateFingerprintsThisNode(t *testing.T) {
	f := &fpFake{fakeAPI: &fakeAPI{}, resp: &api.UpdateFingerprintsResponse{Nodes: []api.RenewedCert{
		{CID: 2, Name: "pmg2", IP: "192.168.2.128", OldFingerprint: "AA", Fingerprint: "BB", Expires: fpExpires},
	}}}
	r := runFake(t, f, "", "update-fingerprints")
	want := "cid 2 (pmg2, 192.168.2.128): new fingerprint BB, valid until 2028-03-01\n"
	if r.code != ExitOK || r.stdout != want || r.stderr != "" || f.gotAll || !slices.Equal(f.calls, []string{"update-fingerprints"}) {
		t.Errorf("exit %d, stdout %q, stderr %q, all %v, calls %v", r.code, r.stdout, r.stderr, f.gotAll, f.calls)
	}
}

func TestUpdateFingerprintsAllPartial(t *testing.T) {
	f := &fpFake{fakeAPI: &fakeAPI{}, resp: &api.UpdateFingerprintsResponse{Nodes: []api.RenewedCert{
		{CID: 2, Name: "pmg2", IP: "192.168.2.128", OldFingerprint: "AA", Error: "cannot reach the node"},
		{CID: 1, Name: "pmg1", IP: "192.168.2.127", OldFingerprint: "CC", Fingerprint: "DD", Expires: fpExpires},
	}}}
	r := runFake(t, f, "", "update-fingerprints", "--all")
	want := "cid 2 (pmg2, 192.168.2.128): not renewed: cannot reach the node\n" +
		"cid 1 (pmg1, 192.168.2.127): new fingerprint DD, valid until 2028-03-01\n"
	if r.code == ExitOK || r.stdout != want || !strings.Contains(r.stderr, "1 of 2 nodes kept their certificate") || !f.gotAll {
		t.Errorf("exit %d, stdout %q, stderr %q, all %v", r.code, r.stdout, r.stderr, f.gotAll)
	}

	// JSON: the daemon's answer as is, and still a failure.
	r = runFake(t, f, "", "update-fingerprints", "--all", "-o", "json")
	var got api.UpdateFingerprintsResponse
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || len(got.Nodes) != 2 || got.Nodes[1].Fingerprint != "DD" || r.code == ExitOK {
		t.Errorf("json: exit %d, stdout %q, err %v", r.code, r.stdout, err)
	}
}

func TestUpdateFingerprintsErrors(t *testing.T) {
	f := &fpFake{fakeAPI: &fakeAPI{errs: map[string]error{"update-fingerprints": client.NewAPIError(503, api.Error{Code: api.CodeNoQuorum, Message: "no quorum"})}}}
	r := runFake(t, f, "", "update-fingerprints")
	if r.code == ExitOK || !strings.Contains(r.stderr, "no quorum") || !strings.Contains(r.stderr, "majority of the voters") {
		t.Errorf("no quorum: exit %d, stderr %q", r.code, r.stderr)
	}
	r = runFake(t, f, "", "update-fingerprints", "extra")
	if r.code != ExitUsage || len(f.calls) != 1 {
		t.Errorf("extra argument: exit %d, stderr %q, calls %v", r.code, r.stderr, f.calls)
	}
}
