package integration

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/internal/testutil"
)

// withMetrics gives each node of c a --metrics-addr on a free port of its own address
// and returns the scrape URLs by node.
func withMetrics(t *testing.T, c *Cluster) map[*Node]string {
	t.Helper()
	urls := map[*Node]string{}
	for _, n := range c.Nodes {
		addr := net.JoinHostPort(n.IP, strconv.Itoa(testutil.FreePort(t, []string{n.IP})))
		n.ExtraArgs = append(n.ExtraArgs, "--metrics-addr", addr)
		urls[n] = "http://" + addr + "/metrics"
	}
	return urls
}

// scrape reads the text exposition at url into a map from "name{labels}" to value.
func scrape(url string) (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			return nil, fmt.Errorf("bad line %q", line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("bad value in %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out, sc.Err()
}

// sumOf adds the values of every series of metric name whose labels contain all of want.
func sumOf(m map[string]float64, name string, want ...string) (float64, bool) {
	total, found := 0.0, false
	for k, v := range m {
		if k != name && !strings.HasPrefix(k, name+"{") {
			continue
		}
		ok := true
		for _, w := range want {
			if !strings.Contains(k, w) {
				ok = false
			}
		}
		if ok {
			total, found = total+v, true
		}
	}
	return total, found
}

// TestMetrics scrapes /metrics on a 3-node cluster before and after a failover (kill -9
// of the master) and checks that the values are sane.
func TestMetrics(t *testing.T) {
	c := newCluster(t, 3)
	urls := withMetrics(t, c)
	c.form()
	m := c.master()
	for i := range 3 {
		m.CLI("config", "set", fmt.Sprintf("metrics/k%d", i), "v")
	}
	m.CLI("config", "get", "metrics/k0")

	type view struct {
		leaders int
		term    float64
	}
	check := func(nodes []*Node, master *Node) (view, map[*Node]map[string]float64) {
		t.Helper()
		var v view
		all := map[*Node]map[string]float64{}
		testutil.Poll(t, "sane metrics on every node", 15*time.Second, func() error {
			v = view{}
			for _, n := range nodes {
				s, err := scrape(urls[n])
				if err != nil {
					return err
				}
				all[n] = s
				for _, name := range []string{"pmgcm_raft_term", "pmgcm_raft_commit_index", "pmgcm_raft_applied_index",
					"pmgcm_raft_leader_changes_total", "pmgcm_raft_apply_duration_seconds_count",
					"pmgcm_mail_replication_backlog_messages", "pmgcm_mail_accepted_total", "pmgcm_mail_rejected_total",
					"pmgcm_node_certificate_expiry_timestamp_seconds", "pmgcm_config_value_bytes", "pmgcm_config_spill_file_bytes"} {
					if _, ok := sumOf(s, name); !ok {
						return fmt.Errorf("%s: no %s", n.Name, name)
					}
				}
				if s["pmgcm_raft_term"] < 1 || s["pmgcm_raft_applied_index"] < 1 || s["pmgcm_raft_commit_index"] < s["pmgcm_raft_applied_index"] {
					return fmt.Errorf("%s: term %v, commit %v, applied %v", n.Name, s["pmgcm_raft_term"], s["pmgcm_raft_commit_index"], s["pmgcm_raft_applied_index"])
				}
				if v.term == 0 {
					v.term = s["pmgcm_raft_term"]
				} else if s["pmgcm_raft_term"] != v.term {
					return fmt.Errorf("%s: term %v, another node %v", n.Name, s["pmgcm_raft_term"], v.term)
				}
				if exp := time.Unix(int64(s["pmgcm_node_certificate_expiry_timestamp_seconds"]), 0); time.Until(exp) < 365*24*time.Hour {
					return fmt.Errorf("%s: certificate expires %v", n.Name, exp)
				}
				leader := s["pmgcm_raft_leader"]
				if s[`pmgcm_raft_state{state="Leader"}`] != leader {
					return fmt.Errorf("%s: pmgcm_raft_leader %v but state Leader %v", n.Name, leader, s[`pmgcm_raft_state{state="Leader"}`])
				}
				if leader == 1 {
					v.leaders++
					if n != master {
						return fmt.Errorf("%s leads, want %s", n.Name, master.Name)
					}
					// One last-contact series per peer on the master.
					if _, ok := sumOf(s, "pmgcm_raft_last_contact_seconds", `cid="`); !ok {
						return fmt.Errorf("%s: no per-peer last contact", n.Name)
					}
				} else if lc, ok := sumOf(s, "pmgcm_raft_last_contact_seconds", fmt.Sprintf(`address="%s:%d"`, master.IP, master.Port)); !ok || lc > 5 {
					return fmt.Errorf("%s: last contact with the master %v (found %v)", n.Name, lc, ok)
				}
				if s["pmgcm_raft_leader_changes_total"] < 1 {
					return fmt.Errorf("%s: leader changes %v", n.Name, s["pmgcm_raft_leader_changes_total"])
				}
			}
			if v.leaders != 1 {
				return fmt.Errorf("%d leaders", v.leaders)
			}
			return nil
		})
		return v, all
	}

	before, all := check(c.Nodes, m)
	sm := all[m]
	if w, _ := sumOf(sm, "pmgcm_config_operations_total", `op="write"`, `result="ok"`); w < 3 {
		t.Errorf("master: %v config writes counted, want >= 3", w)
	}
	if r, _ := sumOf(sm, "pmgcm_config_operations_total", `op="read"`, `result="ok"`); r < 1 {
		t.Errorf("master: %v config reads counted, want >= 1", r)
	}
	if n, _ := sumOf(sm, "pmgcm_raft_apply_duration_seconds_count"); n < 3 {
		t.Errorf("master: %v applies timed, want >= 3", n)
	}
	for _, n := range c.Nodes[1:] {
		if j, _ := sumOf(all[n], "pmgcm_operation_duration_seconds_count", `op="join"`, `result="ok"`); j != 1 {
			t.Errorf("%s: %v joins counted, want 1", n.Name, j)
		}
	}

	// Failover.
	m.Kill()
	survivors := others(c.Nodes, m)
	nm := c.master()
	nm.CLI("config", "set", "metrics/after", "failover")
	other := survivors[0]
	if other == nm {
		other = survivors[1]
	}
	other.CLI("config", "set", "metrics/via-follower", "x")
	after, all := check(survivors, nm)
	if after.term <= before.term {
		t.Errorf("term %v after the failover, %v before", after.term, before.term)
	}
	for _, n := range survivors {
		if lc := all[n]["pmgcm_raft_leader_changes_total"]; lc < 2 {
			t.Errorf("%s: %v leader changes after a failover, want >= 2", n.Name, lc)
		}
		if w, _ := sumOf(all[n], "pmgcm_config_operations_total", `op="write"`, `result="ok"`); w < 1 {
			t.Errorf("%s: %v config writes counted after the failover", n.Name, w)
		}
	}
	// The new master sees the dead one as failing its heartbeats.
	testutil.Poll(t, "the dead master's last contact grows on the new master", 10*time.Second, func() error {
		s, err := scrape(urls[nm])
		if err != nil {
			return err
		}
		lc, ok := sumOf(s, "pmgcm_raft_last_contact_seconds", fmt.Sprintf(`address="%s:%d"`, m.IP, m.Port))
		if !ok || lc <= 0 {
			return fmt.Errorf("last contact of the dead node %v (found %v)", lc, ok)
		}
		return nil
	})
}
