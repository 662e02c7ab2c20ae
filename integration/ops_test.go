package integration

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/internal/testutil"
)

// health GETs a health check at base (http://ip:port) and returns its status and body.
func health(base, path string) (int, api.Health, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
	if err != nil {
		return 0, api.Health{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, api.Health{}, err
	}
	defer resp.Body.Close()
	var h api.Health
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&h); err != nil {
		return resp.StatusCode, h, fmt.Errorf("GET %s%s: %s, body: %v", base, path, resp.Status, err)
	}
	if h.Reasons == nil {
		return resp.StatusCode, h, fmt.Errorf("GET %s%s: reasons is null, want an array", base, path)
	}
	if (resp.StatusCode == http.StatusOK) != h.OK || (!h.OK && len(h.Reasons) == 0) {
		return resp.StatusCode, h, fmt.Errorf("GET %s%s: %s with %+v", base, path, resp.Status, h)
	}
	return resp.StatusCode, h, nil
}

// waitHealth polls a health check until it answers code with a reason holding reason
// (any, when empty).
func waitHealth(t *testing.T, base, path string, code int, reason string, timeout time.Duration) api.Health {
	t.Helper()
	var got api.Health
	testutil.Poll(t, fmt.Sprintf("%s%s answers %d %q", base, path, code, reason), timeout, func() error {
		c, h, err := health(base, path)
		if err != nil {
			return err
		}
		got = h
		if c != code {
			return fmt.Errorf("answered %d %+v", c, h)
		}
		if reason != "" && !strings.Contains(strings.Join(h.Reasons, "\n"), reason) {
			return fmt.Errorf("reasons %q lack %q", h.Reasons, reason)
		}
		return nil
	})
	return got
}

func baseOf(metricsURL string) string { return strings.TrimSuffix(metricsURL, "/metrics") }

// TestHealthChecks: /health/cluster follows membership and the quorum; /health/mail says
// whether the node takes mail, which it does without a quorum.
func TestHealthChecks(t *testing.T) {
	mc := newMailCluster(t, 3, false)
	urls := withMetrics(t, mc.Cluster)
	n1 := mc.Nodes[0]
	b1 := baseOf(urls[n1])
	n1.Start()
	waitHealth(t, b1, api.PathHealthCluster, http.StatusServiceUnavailable, "not in a cluster", 10*time.Second)
	waitHealth(t, b1, api.PathHealthMail, http.StatusOK, "", 10*time.Second)
	for _, n := range mc.Nodes[1:] {
		n.Start()
	}
	n1.CLI("create")
	n1.WaitMaster(15 * time.Second)
	args := append(joinArgs(t, n1), "--yes")
	for _, n := range mc.Nodes[1:] {
		n.CLI(args...)
	}
	mc.waitAllActive(mc.Nodes, 30*time.Second)
	for _, n := range mc.Nodes {
		waitHealth(t, baseOf(urls[n]), api.PathHealthCluster, http.StatusOK, "", 15*time.Second)
		waitHealth(t, baseOf(urls[n]), api.PathHealthMail, http.StatusOK, "", 5*time.Second)
	}
	// Without a quorum the cluster check fails, and mail intake goes on.
	mc.Nodes[1].Kill()
	mc.Nodes[2].Kill()
	h := waitHealth(t, b1, api.PathHealthCluster, http.StatusServiceUnavailable, "master", 20*time.Second)
	t.Logf("cluster health without quorum: %q", h.Reasons)
	waitHealth(t, b1, api.PathHealthMail, http.StatusOK, "", 5*time.Second)
	s, err := dialSMTP(mc.addr(n1))
	if err != nil {
		t.Fatalf("SMTP on %s without quorum: %v", n1.Name, err)
	}
	s.close()
	// A node without SMTP intake takes no mail.
	solo := newCluster(t, 1)
	su := withMetrics(t, solo)
	solo.Nodes[0].Start()
	waitHealth(t, baseOf(su[solo.Nodes[0]]), api.PathHealthMail, http.StatusServiceUnavailable, "--smtp-port 0", 10*time.Second)
}

// TestClockSkewWarning: a node whose clock is 5 s ahead of the master's is named in a
// status warning, on the master and on the node itself; an in-step node is not.
func TestClockSkewWarning(t *testing.T) {
	c := newCluster(t, 3)
	c.Nodes[2].ExtraArgs = append(c.Nodes[2].ExtraArgs, "--test-clock-offset", "5s")
	c.form()
	for _, n := range []*Node{c.Nodes[0], c.Nodes[2]} {
		testutil.Poll(t, n.Name+" warns of node3's clock", 15*time.Second, func() error {
			st, err := n.Status()
			if err != nil {
				return err
			}
			w := strings.Join(st.Cluster.Warnings, "\n")
			if !strings.Contains(w, "node3: clock differs from the master's (node1) by +5.") {
				return fmt.Errorf("warnings: %q", w)
			}
			if strings.Contains(w, "node2: clock") || strings.Contains(w, "node1: clock") {
				return fmt.Errorf("an in-step node is warned of: %q", w)
			}
			for _, r := range st.Nodes {
				if r.ClockOffsetSeconds == nil {
					return fmt.Errorf("%s has no clock offset", r.Name)
				}
				want := 0.0
				if r.Name == "node3" {
					want = 5
				}
				if d := *r.ClockOffsetSeconds - want; d > 1 || d < -1 {
					return fmt.Errorf("%s clock offset %.3f, want about %.0f", r.Name, *r.ClockOffsetSeconds, want)
				}
			}
			return nil
		})
	}
	out := c.Nodes[1].CLI("status")
	mustContain(t, "status table", out, "warning: node3: clock differs")
}

// TestReportBundle: pmgcm report on a follower of a 3-node cluster collects every node's
// part, and no secret is in it: not the join token, not a line of any node's private key.
func TestReportBundle(t *testing.T) {
	c := newCluster(t, 3)
	withMetrics(t, c)
	c.form()
	token := joinArgs(t, c.Nodes[0])
	tok := token[len(token)-1]
	path := filepath.Join(t.TempDir(), "report.tar.gz")
	out := c.Nodes[1].CLI("report", path)
	if fi, err := os.Stat(path); err == nil {
		t.Logf("bundle of 3 nodes: %d bytes (%s)", fi.Size(), out)
	}
	files := readBundle(t, path)
	for _, n := range c.Nodes {
		dir := fmt.Sprintf("nodes/%s-cid", n.Name)
		for _, f := range []string{"report.json", "metrics.txt", "settings.toml", "log.txt"} {
			found := false
			for name, body := range files {
				if strings.HasPrefix(name, dir) && strings.HasSuffix(name, "/"+f) && len(body) > 0 {
					found = true
				}
			}
			if !found {
				t.Errorf("bundle lacks a non-empty %s*/%s", dir, f)
			}
		}
	}
	for _, want := range []string{"README.txt", "status.json"} {
		if _, ok := files[want]; !ok {
			t.Errorf("bundle lacks %s", want)
		}
	}
	// The expected content.
	for name, body := range files {
		switch {
		case strings.HasSuffix(name, "metrics.txt"):
			mustContain(t, name, body, "pmgcm_raft_term", "pmgcm_disk_free_bytes")
		case strings.HasSuffix(name, "settings.toml"):
			mustContain(t, name, body, "data-dir = ", "min-free-disk = ")
		case strings.HasSuffix(name, "log.txt"):
			mustContain(t, name, body, "pmgclusterd started")
		case strings.HasSuffix(name, "report.json"):
			mustContain(t, name, body, `"raft"`, `"build"`, `"protocol_version"`)
		}
	}
	// The secrets: the join token and every line of every node's private key.
	secrets := []string{tok, "PRIVATE KEY"}
	for _, n := range c.Nodes {
		b, err := os.ReadFile(filepath.Join(n.DataDir, "tls", "node.key"))
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if len(line) >= 16 && !strings.HasPrefix(line, "-----") {
				secrets = append(secrets, line)
			}
		}
	}
	if len(secrets) < 5 {
		t.Fatalf("only %d secrets to look for", len(secrets))
	}
	for name, body := range files {
		for _, s := range secrets {
			if strings.Contains(body, s) {
				t.Errorf("%s holds a secret: %q", name, s)
			}
		}
	}
	// A node that is down is named with the reason, and the rest still comes.
	c.Nodes[2].Kill()
	c.Nodes[1].CLI("report", path)
	files = readBundle(t, path)
	found := false
	for name := range files {
		if strings.HasPrefix(name, "nodes/node3-cid") && strings.HasSuffix(name, "/unavailable.txt") {
			found = true
		}
	}
	if !found {
		t.Errorf("bundle without node3 does not say so: %v", files["README.txt"])
	}
}

// readBundle returns the files of a report by their name under the bundle's top directory.
func readBundle(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
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
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		_, rest, _ := strings.Cut(h.Name, "/")
		files[rest] = string(b)
	}
	return files
}
