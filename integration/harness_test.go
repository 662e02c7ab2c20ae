package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/api"
	apiclient "github.com/pmgcm/pmgcm/api/client"
	"github.com/pmgcm/pmgcm/internal/netfault"
	"github.com/pmgcm/pmgcm/internal/proc"
	"github.com/pmgcm/pmgcm/internal/testutil"
)

// binDir holds the pmgcm and pmgclusterd binaries built by TestMain.
var binDir string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

// runMain builds the binaries and runs the tests. Under -short (make test-unit) it builds
// nothing: every test that runs daemons skips in newCluster, and only the pure ones run.
func runMain(m *testing.M) int {
	flag.Parse()
	if testing.Short() {
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "pmgcm-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binDir = dir
	args := []string{"build"}
	// The daemons run with the race detector unless PMGCM_TEST_NORACE is set.
	if os.Getenv("PMGCM_TEST_NORACE") == "" {
		args = append(args, "-race")
	}
	for _, name := range []string{"pmgcm", "pmgclusterd"} {
		cmd := exec.Command("go", append(args, "-o", filepath.Join(dir, name), "github.com/pmgcm/pmgcm/cmd/"+name)...)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n", name, err)
			return 1
		}
	}
	return m.Run()
}

// Cluster is a set of nodes that share a cluster port, each on its own loopback address.
type Cluster struct {
	t     testing.TB
	Port  int
	Nodes []*Node
	// NS is the network namespace the nodes run in (newNetnsCluster), nil for none.
	NS *netfault.NS
}

// Node is one pmgclusterd process and its data.
type Node struct {
	t       testing.TB
	Index   int
	Name    string
	IP      string
	Port    int
	DataDir string
	Socket  string
	LogPath string
	// BinDir holds the pmgclusterd this node runs and the pmgcm that talks to it (an
	// older release: see upgrade_test.go); empty: the ones TestMain built.
	BinDir string
	// ExtraArgs are added to the daemon's command line on each start.
	ExtraArgs []string
	// NoFile, if set, is the descriptor limit (ulimit -n, soft and hard) the daemon starts
	// with, so that a flood test exhausts it with a few hundred connections.
	NoFile int
	// Launcher, when set, is the command prefix the daemon runs under, such as
	// `ip netns exec NS` (see newNetnsCluster).
	Launcher []string

	mu   sync.Mutex
	proc *proc.Process // the running daemon, or the last one
	// api is the node's control-socket client, made on first use (see API): one per node,
	// so that tests that poll keep one connection instead of leaking one per call.
	api *apiclient.Client
}

// newCluster prepares n nodes (not started). Every node is killed at the end of the test,
// and its log is printed if the test failed.
func newCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	skipShort(t)
	ips := testutil.IPs(n)
	c := &Cluster{t: t, Port: testutil.FreePort(t, ips)}
	sockDir, err := os.MkdirTemp("", "pmgcm-sock-")
	if err != nil {
		t.Fatal(err)
	}
	base := t.TempDir()
	for i := 0; i < n; i++ {
		node := &Node{
			t: t, Index: i, Name: fmt.Sprintf("node%d", i+1), IP: ips[i], Port: c.Port,
			DataDir: filepath.Join(base, fmt.Sprintf("node%d", i+1)),
			Socket:  filepath.Join(sockDir, fmt.Sprintf("n%d.sock", i+1)),
			LogPath: filepath.Join(base, fmt.Sprintf("node%d.log", i+1)),
		}
		c.Nodes = append(c.Nodes, node)
	}
	t.Cleanup(func() {
		for _, node := range c.Nodes {
			node.kill()
		}
		if t.Failed() {
			for _, node := range c.Nodes {
				b, _ := os.ReadFile(node.LogPath)
				t.Logf("==== log of %s (%s) ====\n%s", node.Name, node.IP, tail(b, 80))
			}
		}
		_ = os.RemoveAll(sockDir)
	})
	return c
}

// skipShort skips a test that runs real daemons under -short: make test-unit leaves them to
// make test and make test-integration.
func skipShort(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("runs real pmgclusterd processes: skipped under -short")
	}
}

func tail(b []byte, lines int) string {
	s := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(s) > lines {
		s = s[len(s)-lines:]
	}
	return strings.Join(s, "\n")
}

// daemonArgs is the command line of the node's daemon. The Raft timers are longer than
// the daemon's defaults: race-enabled daemons on a loaded 2-core machine (the whole
// suite runs at once) need the margin; make bench measures the defaults.
func (n *Node) daemonArgs() []string {
	args := []string{
		"--data-dir", n.DataDir, "--ip", n.IP, "--port", strconv.Itoa(n.Port),
		"--name", n.Name, "--socket", n.Socket, "--log-level", "debug",
		"--raft-heartbeat-timeout", "500ms", "--raft-election-timeout", "500ms",
		"--raft-leader-lease-timeout", "250ms",
	}
	return append(args, n.ExtraArgs...)
}

// Start starts the daemon and waits until its control socket answers.
func (n *Node) Start() {
	n.t.Helper()
	if err := n.start(); err != nil {
		n.t.Fatal(err)
	}
	p := n.process()
	testutil.Poll(n.t, n.Name+" control socket", 20*time.Second, func() error {
		if p.Exited() {
			return testutil.Stop(fmt.Errorf("%s exited: %v\n%s", n.Name, p.Err(), n.Log()))
		}
		_, _, err := n.run("status", "--list-single-node")
		return err
	})
}

func (n *Node) start() error {
	daemon := n.bin("pmgclusterd")
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.proc.Exited() {
		return fmt.Errorf("%s is already running", n.Name)
	}
	cmd := exec.Command(daemon, n.daemonArgs()...)
	if n.NoFile > 0 {
		// The shell sets the limit and execs the daemon: the process is the daemon's.
		cmd = exec.Command("/bin/sh", append([]string{"-c", fmt.Sprintf(`ulimit -n %d && exec "$0" "$@"`, n.NoFile),
			cmd.Path}, n.daemonArgs()...)...)
	}
	p, err := proc.Start(n.launched(cmd), n.LogPath)
	if err != nil {
		return err
	}
	n.proc = p
	return nil
}

// bin returns the path of the program name (pmgcm, pmgclusterd) of the node's build.
func (n *Node) bin(name string) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.BinDir != "" {
		return filepath.Join(n.BinDir, name)
	}
	return filepath.Join(binDir, name)
}

// setBinDir makes the node run the build in dir from its next start ("": TestMain's).
func (n *Node) setBinDir(dir string) {
	n.mu.Lock()
	n.BinDir = dir
	n.mu.Unlock()
}

// launched returns cmd run under the node's Launcher (cmd itself without one).
func (n *Node) launched(cmd *exec.Cmd) *exec.Cmd {
	if len(n.Launcher) == 0 {
		return cmd
	}
	args := append(append([]string(nil), n.Launcher[1:]...), cmd.Path)
	return exec.Command(n.Launcher[0], append(args, cmd.Args[1:]...)...)
}

// API returns the node's control-socket client, shared by every call of the test.
func (n *Node) API() *apiclient.Client {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.api == nil {
		n.api = apiclient.New(n.Socket)
	}
	return n.api
}

// process returns the running daemon, or the last one (nil before the first start).
func (n *Node) process() *proc.Process {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.proc
}

// RunDaemon runs the daemon in the foreground with extra arguments and returns its
// combined output and exit code, for tests of refusals at start-up.
func (n *Node) RunDaemon(timeout time.Duration, extra ...string) (string, int) {
	n.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := n.launched(exec.Command(n.bin("pmgclusterd"), append(n.daemonArgs(), extra...)...))
	cmd = exec.CommandContext(ctx, cmd.Path, cmd.Args[1:]...)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		n.t.Fatalf("pmgclusterd did not exit within %s:\n%s", timeout, out)
	}
	return string(out), exitCode(err)
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	return -1
}

// Exited reports whether the daemon process has exited.
func (n *Node) Exited() bool { return n.process().Exited() }

// Kill sends SIGKILL and waits for the process to go.
func (n *Node) Kill() { n.stopWith(syscall.SIGKILL) }

// Stop sends SIGTERM, waits for the process to go, and fails the test unless it exited 0.
func (n *Node) Stop() {
	n.t.Helper()
	n.stopWith(syscall.SIGTERM)
	if err := n.process().Err(); err != nil {
		n.t.Fatalf("%s did not stop cleanly: %v\n%s", n.Name, err, n.Log())
	}
}

// Pause stops the process with SIGSTOP; Resume continues it.
func (n *Node) Pause()  { n.process().Signal(syscall.SIGSTOP) }
func (n *Node) Resume() { n.process().Signal(syscall.SIGCONT) }

// stopWith sends sig and waits up to 30 s for the exit, failing the test after that.
func (n *Node) stopWith(sig syscall.Signal) {
	n.t.Helper()
	if err := n.process().Stop(sig, 30*time.Second); err != nil {
		n.t.Fatalf("%s did not exit within 30s of %v: %v", n.Name, sig, err)
	}
}

// kill ends the daemon at the end of a test, whatever state it is in.
func (n *Node) kill() { _ = n.process().Stop(syscall.SIGKILL, time.Minute) }

// Log returns the daemon's log so far.
func (n *Node) Log() string {
	b, _ := os.ReadFile(n.LogPath)
	return string(b)
}

// run runs pmgcm against this node's socket; err is non-nil on a non-zero exit.
func (n *Node) run(args ...string) (stdout, stderr string, err error) {
	return n.runInput(nil, args...)
}

func (n *Node) runInput(stdin []byte, args ...string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, n.bin("pmgcm"), append([]string{"--socket", n.Socket}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	cmd.Env = append(os.Environ(), "PMGCM_SOCKET=")
	err = cmd.Run()
	if err != nil {
		err = fmt.Errorf("pmgcm %s: exit %d: %s", strings.Join(args, " "), exitCode(err), strings.TrimSpace(errb.String()))
	}
	return out.String(), errb.String(), err
}

// CLI runs pmgcm against this node and returns stdout, failing the test on error.
func (n *Node) CLI(args ...string) string {
	n.t.Helper()
	out, _, err := n.run(args...)
	if err != nil {
		n.t.Fatal(err)
	}
	return out
}

// CLIFail runs pmgcm, expects a non-zero exit, and returns stderr.
func (n *Node) CLIFail(args ...string) string {
	n.t.Helper()
	out, errOut, err := n.run(args...)
	if err == nil {
		n.t.Fatalf("pmgcm %s succeeded, want an error; stdout:\n%s", strings.Join(args, " "), out)
	}
	return errOut
}

// Status returns `pmgcm status -o json` of this node.
func (n *Node) Status() (api.Status, error) {
	out, _, err := n.run("status", "--list-single-node", "-o", "json")
	if err != nil {
		return api.Status{}, err
	}
	var st api.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return api.Status{}, fmt.Errorf("decode status: %v\n%s", err, out)
	}
	return st, nil
}

// WaitMaster waits until this node reports itself as master in state A.
func (n *Node) WaitMaster(timeout time.Duration) {
	n.t.Helper()
	testutil.Poll(n.t, n.Name+" is master", timeout, func() error {
		st, err := n.Status()
		if err != nil {
			return err
		}
		for _, row := range st.Nodes {
			if row.Local {
				if row.Role != api.RoleMaster || row.State != api.StateActive {
					return fmt.Errorf("role %q state %q", row.Role, row.State)
				}
				return nil
			}
		}
		return fmt.Errorf("no local row in status")
	})
}

// Clone returns a node with the same settings and no process, for starting a second
// daemon on the same data directory or with a changed flag.
func (n *Node) Clone() *Node {
	n.mu.Lock()
	bin := n.BinDir
	n.mu.Unlock()
	return &Node{t: n.t, Index: n.Index, Name: n.Name, IP: n.IP, Port: n.Port, DataDir: n.DataDir,
		Socket: n.Socket, LogPath: n.LogPath, ExtraArgs: append([]string(nil), n.ExtraArgs...), NoFile: n.NoFile, BinDir: bin,
		Launcher: n.Launcher}
}

// configList returns `pmgcm config list -o json` of node n.
func configList(t testing.TB, n *Node) []api.ConfigEntry {
	t.Helper()
	var list []api.ConfigEntry
	out := n.CLI("config", "list", "-o", "json")
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("decode config list: %v\n%s", err, out)
	}
	return list
}

// Partition cuts node n's cluster port off from the given nodes (none: heal), through the
// daemon's fault-injection endpoint: start n with ExtraArgs "--fault-injection".
func (n *Node) Partition(from ...*Node) {
	n.t.Helper()
	req := api.PartitionRequest{Hosts: []string{}}
	for _, o := range from {
		req.Hosts = append(req.Hosts, o.IP)
	}
	body, _ := json.Marshal(req)
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", n.Socket)
		},
	}, Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	resp, err := client.Post("http://pmgcm"+api.PathDebugPartition, "application/json", bytes.NewReader(body))
	if err != nil {
		n.t.Fatalf("partition %s: %v", n.Name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		n.t.Fatalf("partition %s: %s: %s (was it started with --fault-injection?)", n.Name, resp.Status, b)
	}
}
