package integration

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/backup"
	"github.com/pmgcm/pmgcm/internal/testutil"
)

// checkReport runs pmgcm check -o json on n and returns the report and whether it
// exited 0.
func checkReport(t *testing.T, n *Node, extra ...string) (api.CheckReport, bool, string) {
	t.Helper()
	out, errOut, err := n.run(append([]string{"check", "-o", "json"}, extra...)...)
	var rep api.CheckReport
	if jerr := json.Unmarshal([]byte(out), &rep); jerr != nil {
		t.Fatalf("pmgcm check -o json: %v (%v)\nstdout: %s\nstderr: %s", jerr, err, out, errOut)
	}
	return rep, err == nil, errOut
}

// TestCheck: a consistent 3-node cluster checks clean (exit 0, one configuration digest,
// the same mail digest everywhere); a body damaged on one node's disk is reported on that
// node with its repair (exit 1); the repair works; a same-size corruption is found by
// --verify-bodies only.
func TestCheck(t *testing.T) {
	t.Parallel()
	mc := newMailCluster(t, 3, false)
	c := mc.Cluster
	c.form()
	setConfig(t, c.Nodes, keyRelayDomains, mailDomain)
	mails := map[string]string{}
	bodies := map[string][]byte{}
	for i := 0; i < 6; i++ {
		msg := mailMsg(fmt.Sprintf("checked-%d", i), 300+i*100)
		mustSend(t, mc.addr(c.Nodes[i%3]), msg)
		mails[fmt.Sprintf("checked-%d", i)] = sha(msg)
		bodies[fmt.Sprintf("checked-%d", i)] = msg
	}
	waitMail(t, c.Nodes, mails, 30*time.Second)

	var rep api.CheckReport
	testutil.Poll(t, "a clean check", 30*time.Second, func() error {
		var ok bool
		var errOut string
		rep, ok, errOut = checkReport(t, c.Nodes[1])
		if !ok || !rep.Consistent {
			return fmt.Errorf("check not clean: %+v %s", rep.Differences, errOut)
		}
		return nil
	})
	if len(rep.Nodes) != 3 || rep.Index == 0 {
		t.Fatalf("report: %+v", rep)
	}
	for _, n := range rep.Nodes {
		if n.ConfigSHA256 == "" || n.ConfigSHA256 != rep.Nodes[0].ConfigSHA256 || n.MailSHA256 != rep.Nodes[0].MailSHA256 || n.Messages != 6 {
			t.Fatalf("node rows differ: %+v", rep.Nodes)
		}
	}
	text := c.Nodes[0].CLI("check")
	mustContain(t, "pmgcm check", text, "3 of 3 nodes compared at index", "6 messages on 3 nodes", "consistent")

	// Damage a body on node3: appended bytes.
	victim := c.Nodes[2]
	id := idOf(t, victim, "checked-4", 10*time.Second)
	path := bodyFile(t, victim, id)
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = f.WriteString("tampered")
	_ = f.Close()
	rep, ok, errOut := checkReport(t, c.Nodes[0])
	if ok || rep.Consistent || len(rep.Differences) != 1 {
		t.Fatalf("damaged body: exit ok %v, report %+v, stderr %s", ok, rep.Differences, errOut)
	}
	d := rep.Differences[0]
	if d.What != "mail" || d.CID != 3 || d.ID != id || !strings.Contains(d.Detail, "wrong-size") ||
		!strings.Contains(d.Repair, "pmgcm quarantine show "+id) {
		t.Fatalf("difference: %+v", d)
	}
	mustContain(t, "stderr", errOut, "the replicas differ")
	_, errOut, err = victim.run("check")
	if err == nil {
		t.Fatal("pmgcm check exited 0 with a damaged body")
	}
	mustContain(t, "check stderr", errOut, "differ")

	// The repair it names brings the node back in line.
	_, _, _ = victim.run("quarantine", "show", id)
	waitBody(t, victim, id, bodies["checked-4"], 30*time.Second)
	testutil.Poll(t, "a clean check after the repair", 30*time.Second, func() error {
		if rep, ok, _ := checkReport(t, c.Nodes[0]); !ok {
			return fmt.Errorf("still differs: %+v", rep.Differences)
		}
		return nil
	})

	// Same size, other bytes, on node2: only a verified check sees it.
	other := c.Nodes[1]
	id2 := idOf(t, other, "checked-1", 10*time.Second)
	path2 := bodyFile(t, other, id2)
	b, err := os.ReadFile(path2)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-1] ^= 0x55
	if err := os.WriteFile(path2, b, 0o640); err != nil {
		t.Fatal(err)
	}
	if rep, ok, _ := checkReport(t, c.Nodes[0]); !ok {
		t.Fatalf("a size-only check reported %+v", rep.Differences)
	}
	rep, ok, _ = checkReport(t, c.Nodes[0], "--verify-bodies")
	if ok || len(rep.Differences) != 1 || rep.Differences[0].CID != 2 || rep.Differences[0].ID != id2 ||
		!strings.Contains(rep.Differences[0].Detail, "corrupt") || !rep.Verified {
		t.Fatalf("verified check: ok %v, %+v", ok, rep.Differences)
	}
}

// smtpListening reports whether something accepts TCP connections at addr.
func smtpListening(addr string) bool {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	_ = conn.Close()
	return true
}

// nodeStateOf returns the state of cid in n's status.
func nodeStateOf(t *testing.T, n *Node, cid uint64) (string, string) {
	t.Helper()
	st, err := n.Status()
	if err != nil {
		return "", ""
	}
	for _, r := range st.Nodes {
		if r.CID == cid {
			return r.State, r.Role
		}
	}
	return "", ""
}

// TestMaintenance: maintenance on a follower closes its SMTP port and shows it in state
// M everywhere; it survives a restart; on the master it hands mastership over, and
// promote is refused; off restores intake and state A.
func TestMaintenance(t *testing.T) {
	t.Parallel()
	mc := newMailCluster(t, 3, false)
	c := mc.Cluster
	urls := withMetrics(t, c)
	c.form()
	setConfig(t, c.Nodes, keyRelayDomains, mailDomain)
	master, followers := c.roles()
	f := followers[0]
	fcid := localRow(mustStatus(t, f)).CID
	if !smtpListening(mc.addr(f)) {
		t.Fatal("SMTP is not listening before maintenance")
	}
	out := f.CLI("maintenance", "on")
	mustContain(t, "maintenance on", out, "is in maintenance")
	if smtpListening(mc.addr(f)) {
		t.Fatalf("%s still accepts SMTP connections in maintenance", f.Name)
	}
	testutil.Poll(t, "state M in the master's status", 15*time.Second, func() error {
		if s, _ := nodeStateOf(t, master, fcid); s != api.StateMaintenance {
			return fmt.Errorf("state %q", s)
		}
		return nil
	})
	mustContain(t, "status", master.CLI("status"), " M ")
	// The load balancer's check says so too.
	waitHealth(t, baseOf(urls[f]), api.PathHealthMail, http.StatusServiceUnavailable, "in maintenance", 10*time.Second)
	mustContain(t, "promote in maintenance", f.CLIFail("promote"), "maintenance")

	// Survives a restart.
	f.Stop()
	f.Start()
	testutil.Poll(t, "state M after a restart", 30*time.Second, func() error {
		if s, _ := nodeStateOf(t, f, fcid); s != api.StateMaintenance {
			return fmt.Errorf("state %q", s)
		}
		return nil
	})
	if smtpListening(mc.addr(f)) {
		t.Fatal("SMTP reopened after a restart in maintenance")
	}

	// On the master, from another node (--cid): it hands over, to the node that is not in
	// maintenance.
	mcid := localRow(mustStatus(t, master)).CID
	third := followers[1]
	out = third.CLI("maintenance", "on", "--cid", fmt.Sprint(mcid))
	mustContain(t, "maintenance on the master", out, "handed over to cid")
	third.WaitMaster(20 * time.Second)
	testutil.Poll(t, "the third node is master", 20*time.Second, func() error {
		if _, role := nodeStateOf(t, third, localRow(mustStatus(t, third)).CID); role != api.RoleMaster {
			return fmt.Errorf("%s is %q", third.Name, role)
		}
		if s, _ := nodeStateOf(t, third, mcid); s != api.StateMaintenance {
			return fmt.Errorf("old master in state %q", s)
		}
		return nil
	})
	if smtpListening(mc.addr(master)) {
		t.Fatal("the old master still takes SMTP in maintenance")
	}

	// Off again: intake and state A come back; configuration writes work throughout.
	f.CLI("maintenance", "off")
	third.CLI("maintenance", "off", "--cid", fmt.Sprint(mcid))
	c.waitAllActive(c.Nodes, 30*time.Second)
	waitHealth(t, baseOf(urls[f]), api.PathHealthMail, http.StatusOK, "", 10*time.Second)
	mustSend(t, mc.addr(f), mailMsg("after-maintenance", 200))
	mustSend(t, mc.addr(master), mailMsg("after-maintenance-2", 200))
	c.Nodes[0].CLI("config", "set", "after/maintenance", "1")
}

// TestScheduledBackup: with --backup-dir, the master writes a backup with mail every
// interval, atomically, and keeps the newest N; status shows the last one; a failure is
// a status warning and a metric, and the next good backup clears it.
func TestScheduledBackup(t *testing.T) {
	t.Parallel()
	mc := newMailCluster(t, 3, false)
	c := mc.Cluster
	dirs := map[*Node]string{}
	base := t.TempDir()
	for _, n := range c.Nodes {
		dirs[n] = filepath.Join(base, n.Name)
		n.ExtraArgs = append(n.ExtraArgs, "--backup-dir", dirs[n], "--backup-interval", "1s", "--backup-keep", "2")
	}
	urls := withMetrics(t, c)
	c.form()
	setConfig(t, c.Nodes, keyRelayDomains, mailDomain)
	msg := mailMsg("in-the-backup", 400)
	mustSend(t, mc.addr(c.Nodes[1]), msg)
	waitMail(t, c.Nodes, map[string]string{"in-the-backup": sha(msg)}, 30*time.Second)
	master := c.master()
	dir := dirs[master]

	var files []string
	testutil.Poll(t, "backups with the mail, the newest 2 kept", 60*time.Second, func() error {
		ents, err := os.ReadDir(dir)
		if err != nil {
			return err
		}
		files = files[:0]
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), ".") {
				continue // a backup being written
			}
			files = append(files, e.Name())
		}
		if len(files) != 2 {
			return fmt.Errorf("%d files in %s: %v", len(files), dir, files)
		}
		for _, name := range files {
			fh, err := os.Open(filepath.Join(dir, name))
			if err != nil {
				return err
			}
			h, err := backup.Verify(fh)
			fh.Close()
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			if !h.WithMail || h.Mail != 1 {
				return fmt.Errorf("%s holds %d messages (with mail %v)", name, h.Mail, h.WithMail)
			}
		}
		return nil
	})
	var row *api.Node
	testutil.Poll(t, "status shows the last backup", 10*time.Second, func() error {
		st := mustStatus(t, master)
		row = localRow(st)
		if row.Backup == nil || row.Backup.LastSuccess.IsZero() || row.Backup.Size == 0 || row.Backup.Error != "" {
			return fmt.Errorf("backup status %+v", row.Backup)
		}
		return nil
	})
	mustContain(t, "status", master.CLI("status"), "last scheduled backup: ")
	m, err := scrape(urls[master])
	if err != nil {
		t.Fatal(err)
	}
	if m["pmgcm_backup_last_failed"] != 0 || m["pmgcm_backup_last_success_timestamp_seconds"] < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Fatalf("metrics: failed %v, last success %v", m["pmgcm_backup_last_failed"], m["pmgcm_backup_last_success_timestamp_seconds"])
	}

	// The directory becomes a file: backups fail, status warns, the metric says so; the
	// old backups were moved aside, not lost.
	aside := dir + ".aside"
	if err := os.Rename(dir, aside); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir, []byte("not a directory"), 0o600); err != nil {
		t.Fatal(err)
	}
	testutil.Poll(t, "a failed backup is a warning and a metric", 30*time.Second, func() error {
		st := mustStatus(t, c.Nodes[0])
		warned := false
		for _, w := range st.Cluster.Warnings {
			warned = warned || strings.Contains(w, "scheduled backup")
		}
		m, err := scrape(urls[master])
		if err != nil {
			return err
		}
		if !warned || m["pmgcm_backup_last_failed"] != 1 {
			return fmt.Errorf("warnings %q, pmgcm_backup_last_failed %v", st.Cluster.Warnings, m["pmgcm_backup_last_failed"])
		}
		return nil
	})
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	testutil.Poll(t, "the next backup clears the warning", 30*time.Second, func() error {
		st := mustStatus(t, c.Nodes[0])
		for _, w := range st.Cluster.Warnings {
			if strings.Contains(w, "scheduled backup") {
				return fmt.Errorf("still warns: %s", w)
			}
		}
		return nil
	})
}

// TestCheckWithFirstReleaseNode: a node of the previous release answers 404 for the
// operator tools: check compares the others and reports that node as not available
// (exit 1, with the upgrade as the repair); maintenance --cid refuses for it, naming why.
func TestCheckWithFirstReleaseNode(t *testing.T) {
	c := newMixedCluster(t)
	first := c.Nodes[0]
	first.CLI("config", "set", "some/key", "v")

	rep, ok, _ := checkReport(t, first)
	if ok || rep.Consistent {
		t.Fatalf("check with an old node exited 0: %+v", rep)
	}
	var oldRow, newRows int
	for _, n := range rep.Nodes {
		switch {
		case n.Name == "node3" && strings.Contains(n.Error, "older version"):
			oldRow++
		case n.Name != "node3" && n.Error == "" && n.ConfigSHA256 != "" && n.ConfigSHA256 == rep.Nodes[0].ConfigSHA256:
			newRows++
		}
	}
	if oldRow != 1 || newRows != 2 || len(rep.Differences) != 1 || !strings.Contains(rep.Differences[0].Repair, "upgrade") {
		t.Fatalf("report: nodes %+v, differences %+v", rep.Nodes, rep.Differences)
	}
	st := mustStatus(t, first)
	var cid3 uint64
	for _, r := range st.Nodes {
		if r.Name == "node3" {
			cid3 = r.CID
		}
	}
	mustContain(t, "maintenance --cid on the old node", first.CLIFail("maintenance", "on", "--cid", fmt.Sprint(cid3)), "older version")
}
