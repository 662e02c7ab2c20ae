package integration

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/internal/testutil"
)

// TestSpillValueUnreadable: a configuration value this node's disk no longer gives back
// (its file under DATA/fsm-values cut short, as a bad block reads) fails its reads with
// the control API's hint, and the node says so where an operator looks: the status
// warnings, /health/cluster, the metrics and the log. A restart rebuilds the values from
// the Raft log and snapshot: the value reads again and every sign of the fault is gone.
func TestSpillValueUnreadable(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 1)
	urls := withMetrics(t, c)
	n := c.Nodes[0]
	c.form()
	big := strings.Repeat("v", 300) // spilled: 64 bytes or more
	n.CLI("config", "set", "spill/big", big)
	n.CLI("config", "set", "spill/small", "s")

	segs, err := filepath.Glob(filepath.Join(n.DataDir, "fsm-values", "*.seg"))
	if err != nil || len(segs) == 0 {
		t.Fatalf("no spill segment under %s: %v", n.DataDir, err)
	}
	for _, s := range segs {
		if err := os.Truncate(s, 0); err != nil {
			t.Fatal(err)
		}
	}

	msg := n.CLIFail("config", "get", "spill/big")
	mustContain(t, "config get of an unreadable value", msg, "configuration value unreadable", "restart pmgclusterd")
	if got := strings.TrimSpace(n.CLI("config", "get", "spill/small")); got != "s" {
		t.Errorf("a value kept in memory reads %q", got)
	}
	const sign = "could not be read back from DATA/fsm-values"
	st := statusOf(t, n)
	mustContain(t, "status warnings", strings.Join(st.Cluster.Warnings, "\n"), "this node: a configuration value "+sign,
		"restart pmgclusterd on this node")
	waitHealth(t, baseOf(urls[n]), api.PathHealthCluster, http.StatusServiceUnavailable, sign, 10*time.Second)
	m, err := scrape(urls[n])
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := sumOf(m, "pmgcm_config_value_unreadable"); v != 1 {
		t.Errorf("pmgcm_config_value_unreadable = %v, want 1", v)
	}
	if v, _ := sumOf(m, "pmgcm_config_value_read_errors_total"); v < 1 {
		t.Errorf("pmgcm_config_value_read_errors_total = %v, want at least 1", v)
	}
	if log := n.Log(); strings.Count(log, "a configuration value cannot be read back") != 1 {
		t.Errorf("the fault is not logged once:\n%s", log)
	}

	n.Stop()
	n.Start()
	n.WaitMaster(15 * time.Second)
	testutil.Poll(t, "the value reads again after the restart", 15*time.Second, func() error {
		_, stderr, err := n.run("config", "get", "spill/big")
		if err != nil {
			return fmt.Errorf("config get: %v: %s", err, stderr)
		}
		return nil
	})
	if got := strings.TrimSpace(n.CLI("config", "get", "spill/big")); got != big {
		t.Fatalf("after the restart the value is %d bytes, want %d", len(got), len(big))
	}
	if w := strings.Join(statusOf(t, n).Cluster.Warnings, "\n"); strings.Contains(w, sign) {
		t.Errorf("the warning outlived the restart: %s", w)
	}
	waitHealth(t, baseOf(urls[n]), api.PathHealthCluster, http.StatusOK, "", 10*time.Second)
}
