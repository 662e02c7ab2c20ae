package daemon

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/api"
)

const testKeyPEM = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBkg4LVWM9nuwNSk3yRxxsd2VMQ1yQjM0ZCqVyWqkvc0oAoGCCqGSM49\nAwEHoUQDQgAEvKxQY3b9x6Zxgb2wq9pLx3yYgZ5Tw0q1Cz3rN6LhX5bG0Tq8Y3yM\n-----END EC PRIVATE KEY-----\n"

func TestRedactor(t *testing.T) {
	salt := []byte("0123456789abcdef")
	token := "tok-Abcdefghijklmnopqrstuvwxyz012345"
	r := newRedactor([][]byte{salt, []byte(token)}, [][]byte{[]byte(testKeyPEM)})
	line := strings.Split(testKeyPEM, "\n")[1]
	in := strings.Join([]string{
		"token=" + token,
		"salt hex " + hex.EncodeToString(salt),
		"salt b64 " + base64.StdEncoding.EncodeToString(salt),
		"a key line alone " + line,
		`json {"key":"` + strings.ReplaceAll(testKeyPEM, "\n", `\n`) + `"}`,
		"other -----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----",
		"kept: node2 cid 2",
	}, "\n")
	out := r.text(in)
	for _, s := range []string{token, hex.EncodeToString(salt), base64.StdEncoding.EncodeToString(salt), line, "AAAA", "PRIVATE KEY-----"} {
		if strings.Contains(out, s) {
			t.Errorf("redacted text still holds %q:\n%s", s, out)
		}
	}
	if !strings.Contains(out, "kept: node2 cid 2") {
		t.Errorf("redaction removed plain text:\n%s", out)
	}
}

func TestWriteBundle(t *testing.T) {
	secret := "the-join-token-0123456789"
	red := newRedactor([][]byte{[]byte(secret)}, nil)
	at := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	parts := []gathered{
		{cid: 1, name: "node1", rep: &nodeReport{CID: 1, Name: "node1", Metrics: "pmgcm_raft_leader 1\n", Settings: "ip = \"127.0.0.1\"\n", Log: "joined with " + secret + "\n"}},
		{cid: 2, name: "node/2", why: notAvailableOlder},
	}
	var buf bytes.Buffer
	if err := writeBundle(&buf, at, api.Status{Nodes: []api.Node{{CID: 1}}}, parts, red); err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(&buf)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	files := map[string]string{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		files[strings.TrimPrefix(h.Name, "pmgcm-report-20261201T090000Z/")] = string(b)
	}
	for _, want := range []string{"README.txt", "status.json", "nodes/node1-cid1/report.json", "nodes/node1-cid1/metrics.txt",
		"nodes/node1-cid1/settings.toml", "nodes/node1-cid1/log.txt", "nodes/node_2-cid2/unavailable.txt"} {
		if _, ok := files[want]; !ok {
			t.Errorf("bundle lacks %s; has %v", want, keys(files))
		}
	}
	for name, body := range files {
		if strings.Contains(body, secret) {
			t.Errorf("%s holds the secret", name)
		}
	}
	if !strings.Contains(files["nodes/node_2-cid2/unavailable.txt"], "older version") {
		t.Errorf("unavailable.txt: %q", files["nodes/node_2-cid2/unavailable.txt"])
	}
	var rep nodeReport
	if err := json.Unmarshal([]byte(files["nodes/node1-cid1/report.json"]), &rep); err != nil || rep.CID != 1 || rep.Log != "" {
		t.Errorf("report.json: %+v, %v", rep, err)
	}
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func FuzzDecodeNodeReport(f *testing.F) {
	b, _ := json.Marshal(nodeReport{CID: 3, Name: "n3", Log: "x\n", Members: []memberRow{{CID: 1}}})
	f.Add(b)
	f.Add([]byte(`{"cid":1,"raft":{"stats":{}}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		rep, _, err := decodeNodeReport(bytes.NewReader(b))
		if err != nil {
			return
		}
		// Whatever decodes can be written into a bundle.
		if err := writeBundle(io.Discard, time.Unix(0, 0), api.Status{}, []gathered{{cid: rep.CID, name: rep.Name, rep: &rep}}, newRedactor(nil, nil)); err != nil {
			t.Fatal(err)
		}
	})
}

// TestRemoteReportOlderPeer: a peer that does not know the report path (a 1ca55cd node
// answers 404 from its mux) is recorded as not available, and an answer over the bound
// is refused.
func TestRemoteReportOlderPeer(t *testing.T) {
	old := httptest.NewServer(http.NotFoundHandler())
	defer old.Close()
	d := &Daemon{}
	_, older, err := d.remoteReport(context.Background(), old.Client(), strings.TrimPrefix(old.URL, "http://"))
	if !older || err == nil || !strings.Contains(err.Error(), notAvailableOlder) {
		t.Fatalf("older peer: older %v, err %v", older, err)
	}
	big := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"log":"`))
		w.Write(bytes.Repeat([]byte("x"), maxNodeReport))
		w.Write([]byte(`"}`))
	}))
	defer big.Close()
	if _, _, err := d.remoteReport(context.Background(), big.Client(), strings.TrimPrefix(big.URL, "http://")); err == nil || !strings.Contains(err.Error(), "over") {
		t.Fatalf("oversized report: %v", err)
	}
}
