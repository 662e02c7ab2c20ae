package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/api"
)

// cpuSeconds is the CPU time (user + system) so far of the pmgclusterd process whose
// command line contains needle, read from /proc.
func cpuSeconds(t *testing.T, needle string) float64 {
	t.Helper()
	cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, path := range cmdlines {
		b, err := os.ReadFile(path)
		if err != nil || !strings.Contains(string(b), needle) || !strings.Contains(string(b), "pmgclusterd") {
			continue
		}
		st, err := os.ReadFile(filepath.Join(filepath.Dir(path), "stat"))
		if err != nil {
			continue
		}
		// Fields after "(comm)": state is the 1st, utime the 12th, stime the 13th.
		f := strings.Fields(string(st)[strings.LastIndex(string(st), ")")+2:])
		u, err1 := strconv.ParseFloat(f[11], 64)
		s, err2 := strconv.ParseFloat(f[12], 64)
		if err1 != nil || err2 != nil {
			t.Fatalf("cannot parse %s", st)
		}
		return (u + s) / 100 // clock ticks; USER_HZ is 100 on Linux
	}
	t.Skipf("no /proc entry for the daemon with %q (not Linux?)", needle)
	return 0
}

// TestDeletedNodeIdles: a node deleted while it runs stops Raft and then idles; it used
// to spin on its closed Raft node (7.6 and 13.7 CPU-seconds per 10 s measured; 3.4 per
// 5 s in this test before the fix).
func TestDeletedNodeIdles(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3)
	c.form()
	m, rest := c.roles()
	victim := rest[1]
	cid := localRow(mustStatus(t, victim)).CID
	cliRetry(t, m, "delete", strconv.FormatUint(cid, 10))
	poll(t, 30*time.Second, victim.Name+" knows it was removed", func() error {
		st, err := victim.Status()
		if err != nil {
			return err
		}
		if r := localRow(st); r == nil || r.Role != api.RoleNone || r.State != api.StateDown {
			return fmt.Errorf("status of the deleted node: %s", suffrages(st))
		}
		return nil
	})
	const window = 5 * time.Second
	before := cpuSeconds(t, victim.Socket)
	<-time.After(window) // a measurement window, not a wait for a state
	used := cpuSeconds(t, victim.Socket) - before
	t.Logf("%s used %.2f CPU-seconds in %s after it was deleted", victim.Name, used, window)
	if used > 1.0 {
		t.Fatalf("the deleted node %s used %.2f CPU-seconds in %s: it spins", victim.Name, used, window)
	}
}
