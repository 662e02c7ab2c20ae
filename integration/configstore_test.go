package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/api"
	apiclient "github.com/pmgcm/pmgcm/api/client"
	"github.com/pmgcm/pmgcm/internal/testutil"
)

// TestCASAndQuorumLoss: compare-and-set from any node; without a quorum writes and
// linearizable reads fail within seconds with a clear error, and stale reads still answer.
func TestCASAndQuorumLoss(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3)
	c.form()
	m, followers := c.roles()
	f := followers[0]
	out := f.CLI("config", "set", "cas/k", "v1", "--if-version", "0")
	var v1 uint64
	if _, err := fmt.Sscanf(out, "cas/k version %d", &v1); err != nil || v1 == 0 {
		t.Fatalf("set from a follower printed %q", out)
	}
	errOut := f.CLIFail("config", "set", "cas/k", "v2", "--if-version", "0")
	if !strings.Contains(errOut, fmt.Sprintf("version %d", v1)) {
		t.Fatalf("CAS conflict does not name the current version %d: %q", v1, errOut)
	}
	m.CLI("config", "set", "cas/k", "v2", "--if-version", fmt.Sprint(v1))
	if errOut := f.CLIFail("config", "delete", "cas/k", "--if-version", fmt.Sprint(v1)); !strings.Contains(errOut, "version") {
		t.Fatalf("stale CAS delete said %q", errOut)
	}
	if got := f.CLI("config", "get", "cas/k"); got != "v2" {
		t.Fatalf("a failed CAS changed the value: %q", got)
	}

	for _, n := range c.Nodes {
		if n != f {
			n.Kill()
		}
	}
	start := time.Now()
	errOut = f.CLIFail("config", "set", "cas/k", "v3")
	if d := time.Since(start); d > 15*time.Second {
		t.Fatalf("a write without quorum took %s to fail", d)
	}
	if !strings.Contains(errOut, "no quorum") || !strings.Contains(errOut, "1 of 3 voters reachable") || !strings.Contains(errOut, "pmgcm promote") {
		t.Fatalf("write without quorum said %q", errOut)
	}
	if errOut := f.CLIFail("config", "get", "cas/k"); !strings.Contains(errOut, "no quorum") {
		t.Fatalf("linearizable read without quorum said %q", errOut)
	}
	stdout, stderr, err := f.run("config", "get", "cas/k", "--stale")
	if err != nil || stdout != "v2" || !strings.Contains(stderr, "stale read") {
		t.Fatalf("stale read without quorum: %q %q %v", stdout, stderr, err)
	}
}

// watchProc runs `pmgcm config watch -o json` on a node and collects its events.
type watchProc struct {
	mu     sync.Mutex
	events map[string]api.WatchEvent // latest per key
	cancel context.CancelFunc
	done   chan struct{}
}

func startWatch(t *testing.T, n *Node, prefix string) *watchProc {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "pmgcm"), "--socket", n.Socket, "config", "watch", prefix, "-o", "json")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w := &watchProc{events: map[string]api.WatchEvent{}, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var ev api.WatchEvent
			if json.Unmarshal(sc.Bytes(), &ev) == nil && ev.Key != "" {
				w.mu.Lock()
				if ev.Version >= w.events[ev.Key].Version {
					w.events[ev.Key] = ev
				}
				w.mu.Unlock()
			}
		}
		_ = cmd.Wait()
	}()
	t.Cleanup(func() { cancel(); <-w.done })
	return w
}

// TestWatchResumes: a watch keeps every key's latest state across a kill -9 of its node
// and a change of master, deletions included.
func TestWatchResumes(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3)
	c.form()
	m, followers := c.roles()
	watched, other := followers[0], followers[1]
	m.CLI("config", "set", "w/before", "0")
	w := startWatch(t, watched, "w/")
	want := map[string]string{"w/before": "0"}
	for i := 0; i < 5; i++ {
		key := fmt.Sprintf("w/k%d", i)
		m.CLI("config", "set", key, "a")
		want[key] = "a"
	}
	watched.Kill()
	for i := 0; i < 5; i++ {
		key := fmt.Sprintf("w/k%d", i)
		other.CLI("config", "set", key, "b")
		want[key] = "b"
	}
	watched.Start()
	other.CLI("promote")
	other.CLI("config", "delete", "w/k0")
	delete(want, "w/k0")
	other.CLI("config", "set", "w/after", "z")
	want["w/after"] = "z"
	testutil.Poll(t, "watch sees the final state", 30*time.Second, func() error {
		w.mu.Lock()
		defer w.mu.Unlock()
		for k, v := range want {
			ev := w.events[k]
			if ev.Deleted || ev.Value == nil || *ev.Value != v {
				return fmt.Errorf("%s: watch has %+v, want %q", k, ev, v)
			}
		}
		if ev, ok := w.events["w/k0"]; !ok || !ev.Deleted {
			return fmt.Errorf("deletion of w/k0 not seen: %+v", ev)
		}
		return nil
	})
}

// TestConfigExport: entries under the chosen prefix appear as files, atomically
// replaced, removed on delete, and reconciled after a restart.
func TestConfigExport(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 1)
	n := c.Nodes[0]
	dir := t.TempDir()
	n.ExtraArgs = []string{"--config-export-dir", dir, "--config-export-prefix", "etc/"}
	n.Start()
	n.CLI("create")
	n.WaitMaster(10 * time.Second)
	n.CLI("config", "set", "etc/postfix/main.cf", "relayhost = x\n")
	n.CLI("config", "set", "other/key", "not exported")
	file := filepath.Join(dir, "etc", "postfix", "main.cf")
	waitFile := func(want string) {
		t.Helper()
		testutil.Poll(t, "exported "+file, 10*time.Second, func() error {
			b, err := os.ReadFile(file)
			if want == "" {
				if !os.IsNotExist(err) {
					return fmt.Errorf("still there: %q %v", b, err)
				}
				return nil
			}
			if err != nil || string(b) != want {
				return fmt.Errorf("got %q %v", b, err)
			}
			return nil
		})
	}
	waitFile("relayhost = x\n")
	if _, err := os.Stat(filepath.Join(dir, "other")); !os.IsNotExist(err) {
		t.Fatalf("a key outside the prefix was exported: %v", err)
	}
	n.CLI("config", "set", "etc/postfix/main.cf", "relayhost = y\n")
	waitFile("relayhost = y\n")
	n.Stop()
	// While the daemon is down the file is damaged: the restart puts it right.
	if err := os.WriteFile(file, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	n.Start()
	n.CLI("config", "delete", "etc/postfix/main.cf")
	waitFile("")
}

// TestSnapshotCatchUp: a node that was down while thousands of entries were written
// catches up from a snapshot, the log having been compacted past it.
func TestSnapshotCatchUp(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3)
	for _, n := range c.Nodes {
		n.ExtraArgs = []string{"--raft-snapshot-threshold", "256", "--raft-trailing-logs", "64", "--raft-snapshot-interval", "200ms"}
	}
	c.form()
	m, followers := c.roles()
	down := followers[0]
	down.Stop()
	const entries = 3000
	client := apiclient.New(m.Socket)
	var wg sync.WaitGroup
	errs := make(chan error, entries)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < entries; i += 8 {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				_, err := client.ConfigSet(ctx, fmt.Sprintf("bulk/%05d", i), []byte(fmt.Sprint(i)), apiclient.WriteOptions{})
				cancel()
				if err != nil {
					errs <- err
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	down.Start()
	c.waitAllActive(c.Nodes, 60*time.Second)
	list := configList(t, down)
	if len(list) != entries {
		t.Fatalf("%s has %d entries after catching up, want %d", down.Name, len(list), entries)
	}
	if !strings.Contains(down.Log(), "snapshot") {
		t.Fatalf("%s did not catch up from a snapshot; log:\n%s", down.Name, tail([]byte(down.Log()), 40))
	}
}
