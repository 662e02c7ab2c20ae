package packaging

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

const (
	alertRules = "prometheus/pmgcm-alerts.yml"
	dashboard  = "grafana/pmgcm-dashboard.json"
)

var (
	metricName  = regexp.MustCompile(`\bpmgcm_[a-z0-9_]+`)
	plannedLine = regexp.MustCompile(`(?m)^#\s+(pmgcm_[a-z0-9_]+)\s`)
	exportedRe  = regexp.MustCompile(`"(pmgcm_[a-z0-9_]+)"`)
)

// exported returns the metric names the daemon's code defines, with the series names of
// its histograms.
func exported(t *testing.T) map[string]bool {
	t.Helper()
	files, err := filepath.Glob("../daemon/*.go")
	if err != nil || len(files) == 0 {
		t.Fatalf("daemon sources: %v", err)
	}
	names := map[string]bool{}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		for _, m := range exportedRe.FindAllStringSubmatch(read(t, f), -1) {
			for _, suffix := range []string{"", "_bucket", "_count", "_sum"} {
				names[m[1]+suffix] = true
			}
		}
	}
	return names
}

// planned returns the metric names the rules file lists as not exported yet.
func planned(t *testing.T) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	for _, m := range plannedLine.FindAllStringSubmatch(read(t, alertRules), -1) {
		names[m[1]] = true
	}
	return names
}

// checkMetrics reports every pmgcm_ name in text that the daemon neither exports nor
// the rules file announces.
func checkMetrics(t *testing.T, what, text string) {
	t.Helper()
	known, later := exported(t), planned(t)
	for _, name := range metricName.FindAllString(text, -1) {
		if !known[name] && !later[name] {
			t.Errorf("%s uses %s, which the daemon does not export (daemon/metrics.go) and the rules' comment does not announce", what, name)
		}
	}
}

// The rules cover what an operator must hear of, and use the daemon's metric names.
func TestAlertRulesMetrics(t *testing.T) {
	text := read(t, alertRules)
	var alerts []string
	for _, m := range regexp.MustCompile(`(?m)^\s+- alert: (\w+)$`).FindAllStringSubmatch(text, -1) {
		alerts = append(alerts, m[1])
	}
	for _, want := range []string{"PmgcmNoMaster", "PmgcmNodeDown", "PmgcmReplicationBacklogGrowing", "PmgcmDiskGuard", "PmgcmCertificateExpiring", "PmgcmBackupFailed"} {
		if !strings.Contains(" "+strings.Join(alerts, " ")+" ", " "+want+" ") {
			t.Errorf("no alert %s in %s (have %v)", want, alertRules, alerts)
		}
	}
	later := planned(t)
	for _, name := range []string{"pmgcm_disk_guard_active", "pmgcm_backup_last_success_timestamp_seconds", "pmgcm_backup_last_failed"} {
		if !later[name] && !exported(t)[name] {
			t.Errorf("%s is neither exported nor announced in the rules' comment", name)
		}
	}
	// Only what follows "groups:" is rules; the comment above it names the planned metrics.
	checkMetrics(t, alertRules, text[strings.Index(text, "\ngroups:"):])
}

// promtool accepts the rules, and their unit tests (prometheus/pmgcm-alerts_test.yml) pass.
func TestAlertRulesPromtool(t *testing.T) {
	if _, err := exec.LookPath("promtool"); err != nil {
		t.Skip("no promtool: alert rules not checked (scripts/ci-deps.sh installs the prometheus package)")
	}
	for _, args := range [][]string{{"check", "rules", "pmgcm-alerts.yml"}, {"test", "rules", "pmgcm-alerts_test.yml"}} {
		cmd := exec.Command("promtool", args...)
		cmd.Dir = "prometheus"
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// The dashboard is JSON Grafana imports: a uid, a data source variable, panels with
// distinct ids whose queries use the daemon's metrics.
func TestDashboard(t *testing.T) {
	b, err := os.ReadFile(dashboard)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		UID        string `json:"uid"`
		Title      string `json:"title"`
		Templating struct {
			List []struct {
				Name, Type string
			} `json:"list"`
		} `json:"templating"`
		Panels []struct {
			ID         int    `json:"id"`
			Type       string `json:"type"`
			Title      string `json:"title"`
			Datasource struct {
				UID string `json:"uid"`
			} `json:"datasource"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboard, err)
	}
	if d.UID == "" || d.Title == "" {
		t.Errorf("dashboard uid %q, title %q", d.UID, d.Title)
	}
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Type
	}
	if vars["datasource"] != "datasource" || vars["job"] != "query" || vars["instance"] != "query" {
		t.Errorf("dashboard variables %v, want datasource, job and instance", vars)
	}
	ids := map[int]bool{}
	queries := 0
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d twice", p.ID)
		}
		ids[p.ID] = true
		if p.Type == "row" {
			continue
		}
		if p.Datasource.UID != "${datasource}" || len(p.Targets) == 0 {
			t.Errorf("panel %q: data source %q, %d queries", p.Title, p.Datasource.UID, len(p.Targets))
		}
		for _, q := range p.Targets {
			queries++
			checkMetrics(t, "panel "+p.Title, q.Expr)
		}
	}
	if queries < 10 {
		t.Errorf("%d queries in the dashboard", queries)
	}
}
