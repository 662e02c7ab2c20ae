package integration

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/internal/testutil"
)

// TestCreateStatusConfigOneNode walks the manual's first steps on one node: a standalone
// node with configuration, create (which keeps it), status, and the config commands.
func TestCreateStatusConfigOneNode(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 1)
	n := c.Nodes[0]
	n.Start()

	if out := n.CLI("status"); strings.TrimSpace(out) != "no cluster defined" {
		t.Fatalf("status before create = %q, want %q", out, "no cluster defined")
	}
	single := n.CLI("status", "--list-single-node")
	if !strings.Contains(single, "node1(1)") || !strings.Contains(single, n.IP) {
		t.Fatalf("status --list-single-node does not list the node:\n%s", single)
	}
	st, err := n.Status()
	if err != nil {
		t.Fatal(err)
	}
	if st.Cluster != nil || len(st.Nodes) != 1 || st.Nodes[0].Role != api.RoleNone {
		t.Fatalf("standalone status = %+v, want no cluster and one node with role -", st)
	}

	// Configuration on a standalone node, kept by create ("All data is preserved").
	n.CLI("config", "set", "mail/relay_domains", "example.com")
	binary := []byte{0, 1, 2, 0xff, '\n', 0xfe}
	file := t.TempDir() + "/blob"
	if err := os.WriteFile(file, binary, 0o600); err != nil {
		t.Fatal(err)
	}
	n.CLI("config", "set", "files/blob", "--file", file)

	out := n.CLI("create")
	if !strings.Contains(out, "created") {
		t.Fatalf("create said %q", out)
	}
	n.WaitMaster(10 * time.Second)

	if got := n.CLI("config", "get", "mail/relay_domains"); got != "example.com" {
		t.Fatalf("config get after create = %q, want %q", got, "example.com")
	}
	if got := n.CLI("config", "get", "files/blob"); !bytes.Equal([]byte(got), binary) {
		t.Fatalf("binary value not byte-exact: %q", got)
	}

	table := n.CLI("status")
	lines := strings.Split(strings.TrimRight(table, "\n"), "\n")
	if len(lines) < 2 || !strings.Contains(lines[0], "NAME(CID)--------------IPADDRESS----ROLE-STATE---------UPTIME---LOAD----MEM---DISK") {
		t.Fatalf("status table header wrong:\n%s", table)
	}
	fields := strings.Fields(lines[1])
	if fields[0] != "node1(1)" || fields[1] != n.IP || fields[2] != "master" || fields[3] != "A" {
		t.Fatalf("status row = %q, want node1(1) %s master A ...", lines[1], n.IP)
	}
	if !strings.HasSuffix(fields[len(fields)-1], "%") || !strings.HasSuffix(fields[len(fields)-2], "%") {
		t.Fatalf("status row lacks MEM and DISK percentages: %q", lines[1])
	}

	st, err = n.Status()
	if err != nil {
		t.Fatal(err)
	}
	if st.Cluster == nil || st.Cluster.ID == "" || st.Cluster.Epoch != 1 || st.Cluster.LeaderCID != 1 {
		t.Fatalf("cluster in status = %+v", st.Cluster)
	}
	row := st.Nodes[0]
	if row.Sys == nil || row.Sys.UptimeSeconds <= 0 || row.Sys.MemPercent <= 0 || row.Sys.DiskPercent <= 0 {
		t.Fatalf("live metrics missing: %+v", row.Sys)
	}
	if row.Suffrage != "voter" || row.Fingerprint == "" || row.AppliedIndex == 0 {
		t.Fatalf("node row = %+v", row)
	}

	// list and delete, with the version as the Raft index of the change.
	list := configList(t, n)
	if len(list) != 2 || list[0].Key != "files/blob" || list[1].Key != "mail/relay_domains" {
		t.Fatalf("config list = %+v", list)
	}
	if prefixed := n.CLI("config", "list", "mail/"); !strings.Contains(prefixed, "mail/relay_domains") || strings.Contains(prefixed, "files/blob") {
		t.Fatalf("config list mail/ = %q", prefixed)
	}
	n.CLI("config", "delete", "files/blob")
	if errOut := n.CLIFail("config", "get", "files/blob"); !strings.Contains(errOut, "not found") {
		t.Fatalf("get of a deleted key said %q", errOut)
	}
	if errOut := n.CLIFail("config", "delete", "files/blob"); !strings.Contains(errOut, "not found") {
		t.Fatalf("delete of an absent key said %q", errOut)
	}

	// create on a node that is in a cluster fails and changes nothing.
	before, _ := n.Status()
	errOut := n.CLIFail("create")
	if !strings.Contains(errOut, "already in a cluster") || !strings.Contains(errOut, before.Cluster.ID) {
		t.Fatalf("second create said %q", errOut)
	}
	after, _ := n.Status()
	if after.Cluster.ID != before.Cluster.ID || after.Nodes[0].Fingerprint != before.Nodes[0].Fingerprint {
		t.Fatalf("second create changed the cluster: %+v -> %+v", before.Cluster, after.Cluster)
	}
}

// TestConfigErrors checks that bad input is refused with a clear error and changes nothing.
func TestConfigErrors(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 1)
	n := c.Nodes[0]
	n.Start()
	n.CLI("create")
	n.WaitMaster(10 * time.Second)
	big := t.TempDir() + "/big"
	if err := os.WriteFile(big, bytes.Repeat([]byte("x"), 1<<20+1), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"empty key", []string{"config", "set", "", "v"}, "key"},
		{"bad segment", []string{"config", "set", "a//b", "v"}, "key"},
		{"too long key", []string{"config", "set", strings.Repeat("k", 257), "v"}, "key"},
		{"too large value", []string{"config", "set", "big", "--file", big}, "large"},
		{"missing file", []string{"config", "set", "k", "--file", "/nonexistent/file"}, "nonexistent"},
		{"value and file", []string{"config", "set", "k", "v", "--file", big}, ""},
		{"get absent", []string{"config", "get", "absent"}, "not found"},
	}
	for _, tc := range cases {
		errOut := n.CLIFail(tc.args...)
		if !strings.Contains(strings.ToLower(errOut), tc.want) {
			t.Errorf("%s: stderr %q does not mention %q", tc.name, errOut, tc.want)
		}
	}
	if out := n.CLI("config", "list"); strings.Contains(out, "big") || strings.Contains(out, "kkk") {
		t.Fatalf("a refused write changed the configuration:\n%s", out)
	}
}

// TestKillRestartKeepsAcknowledged kill -9s a node under a stream of concurrent writes
// and checks after the restart that the cluster identity and every acknowledged entry
// are still there.
func TestKillRestartKeepsAcknowledged(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 1)
	n := c.Nodes[0]
	n.Start()
	n.CLI("create")
	n.WaitMaster(10 * time.Second)
	before, err := n.Status()
	if err != nil {
		t.Fatal(err)
	}

	var (
		mu    sync.Mutex
		acked = map[string]string{}
		wg    sync.WaitGroup
		stop  = make(chan struct{})
	)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				key, val := fmt.Sprintf("w%d/k%d", w, i), strconv.Itoa(i*7+w)
				if _, _, err := n.run("config", "set", key, val); err != nil {
					return // the node is gone: this write may or may not have landed
				}
				mu.Lock()
				acked[key] = val
				mu.Unlock()
			}
		}(w)
	}
	testutil.Poll(t, "some acknowledged writes", 30*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(acked) < 20 {
			return fmt.Errorf("%d acknowledged", len(acked))
		}
		return nil
	})
	n.Kill()
	close(stop)
	wg.Wait()

	n.Start()
	n.WaitMaster(15 * time.Second)
	after, err := n.Status()
	if err != nil {
		t.Fatal(err)
	}
	if after.Cluster == nil || after.Cluster.ID != before.Cluster.ID || after.Nodes[0].Fingerprint != before.Nodes[0].Fingerprint {
		t.Fatalf("cluster identity changed across kill -9: %+v -> %+v", before.Cluster, after.Cluster)
	}
	have := map[string]string{}
	for _, e := range configList(t, n) {
		if e.Value != nil {
			have[e.Key] = *e.Value
		}
	}
	for k, v := range acked {
		if have[k] != v {
			t.Errorf("acknowledged %s=%s lost after kill -9 (have %q)", k, v, have[k])
		}
	}
	t.Logf("%d acknowledged writes survived kill -9", len(acked))
}

// TestCleanShutdown checks that SIGTERM stops the daemon with exit 0, removes its socket,
// and that the socket was private (mode 0600) while it ran.
func TestCleanShutdown(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 1)
	n := c.Nodes[0]
	n.Start()
	fi, err := os.Stat(n.Socket)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("control socket mode = %v, want a 0600 socket", fi.Mode())
	}
	n.CLI("create")
	n.Stop()
	if _, err := os.Stat(n.Socket); !os.IsNotExist(err) {
		t.Fatalf("socket left behind after SIGTERM: %v", err)
	}
	if errOut := n.CLIFail("status"); !strings.Contains(errOut, "cannot reach pmgclusterd") {
		t.Fatalf("status with the daemon down said %q", errOut)
	}
	n.Start()
	n.WaitMaster(10 * time.Second)
}
