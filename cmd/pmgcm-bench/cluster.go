package main

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/pmgcm/pmgcm/api"
	apiclient "github.com/pmgcm/pmgcm/api/client"
	"github.com/pmgcm/pmgcm/internal/proc"
	"github.com/pmgcm/pmgcm/internal/testutil"
)

// node is one pmgclusterd process of the bench cluster and its data.
type node struct {
	name     string
	ip       string
	port     int
	smtpPort int // 0: no SMTP intake
	dataDir  string
	socket   string
	logPath  string
	bin      string
	cid      uint64 // set once the node is a member

	client *apiclient.Client // for control calls of the bench itself (not the load)

	mu   sync.Mutex
	proc *proc.Process // the running daemon, or the last one
}

func (n *node) args() []string {
	a := []string{"--data-dir", n.dataDir, "--ip", n.ip, "--port", strconv.Itoa(n.port),
		"--name", n.name, "--socket", n.socket}
	if n.smtpPort > 0 {
		a = append(a, "--smtp-port", strconv.Itoa(n.smtpPort))
	}
	return a
}

// start starts the daemon and waits until its control socket answers.
func (n *node) start(ctx context.Context) error {
	n.mu.Lock()
	if !n.proc.Exited() {
		n.mu.Unlock()
		return fmt.Errorf("%s is already running", n.name)
	}
	cmd := exec.Command(n.bin, n.args()...)
	// Its own process group: a Ctrl-C at the terminal reaches the bench only, which then
	// stops the daemons in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	p, err := proc.Start(cmd, n.logPath)
	if err != nil {
		n.mu.Unlock()
		return fmt.Errorf("start %s: %w", n.name, err)
	}
	n.proc = p
	n.mu.Unlock()
	return testutil.WaitEvery(ctx, n.name+" control socket", 30*time.Second, 20*time.Millisecond, func() error {
		if p.Exited() {
			return testutil.Stop(fmt.Errorf("%s exited: %v (log: %s)", n.name, p.Err(), n.logPath))
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err := n.client.Status(cctx)
		return err
	})
}

func (n *node) process() *proc.Process {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.proc
}

func (n *node) running() bool { return !n.process().Exited() }

func (n *node) signal(sig syscall.Signal) { n.process().Signal(sig) }

// kill sends SIGKILL (kill -9) and waits until the process is gone. It returns the time
// the signal was sent.
func (n *node) kill() time.Time {
	at := time.Now()
	_ = n.process().Stop(syscall.SIGKILL, time.Minute)
	return at
}

// stop sends SIGTERM and kills the process if it has not exited within timeout.
func (n *node) stop(timeout time.Duration) { _ = n.process().Stop(syscall.SIGTERM, timeout) }

// cluster is the bench's set of nodes.
type cluster struct {
	dir   string
	nodes []*node
}

// newCluster prepares the nodes (not started) with data under dir.
func newCluster(dir, bin string, ips []string, port, smtpPort int) *cluster {
	c := &cluster{dir: dir}
	for i, ip := range ips {
		name := fmt.Sprintf("node%d", i+1)
		n := &node{
			name: name, ip: ip, port: port, smtpPort: smtpPort, bin: bin,
			dataDir: filepath.Join(dir, name),
			socket:  filepath.Join(dir, name+".sock"),
			logPath: filepath.Join(dir, name+".log"),
		}
		n.client = apiclient.New(n.socket)
		c.nodes = append(c.nodes, n)
	}
	return c
}

// stopAll stops every running node, in parallel.
func (c *cluster) stopAll(timeout time.Duration) {
	var wg sync.WaitGroup
	for _, n := range c.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n.stop(timeout)
		}()
	}
	wg.Wait()
}

// create makes members[0] the master of a new cluster and joins the others to it, using
// the control API as pmgcm create / join-cmd / join do, then waits until all are in state A.
func (c *cluster) create(ctx context.Context, members []*node) error {
	first := members[0]
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cr, err := first.client.Create(cctx)
	if err != nil {
		return fmt.Errorf("create on %s: %w", first.name, err)
	}
	first.cid = cr.CID
	for _, n := range members[1:] {
		if err := c.join(ctx, n); err != nil {
			return err
		}
	}
	if err := c.waitActive(ctx, members, 60*time.Second); err != nil {
		return err
	}
	c.waitClusterVersion(ctx, first)
	return nil
}

// waitClusterVersion waits (up to 15 s) until the cluster version that n reports has
// reached the lowest feature level of the members: the master records it within a few
// seconds of a join, and the workloads should measure the cluster as it then runs (with
// the wire features of its level). Builds that report no level are not waited for.
func (c *cluster) waitClusterVersion(ctx context.Context, n *node) {
	err := testutil.WaitEvery(ctx, "the cluster version", 15*time.Second, 50*time.Millisecond, func() error {
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		st, err := n.client.Status(cctx)
		cancel()
		if err != nil || st.Cluster == nil {
			return fmt.Errorf("status: %v", err)
		}
		lowest := 0
		for _, row := range st.Nodes {
			if row.Level == 0 {
				return nil // a build of before versions: nothing to wait for
			}
			if lowest == 0 || row.Level < lowest {
				lowest = row.Level
			}
		}
		if st.Cluster.Version < lowest {
			return fmt.Errorf("cluster version %d, the members' lowest level %d", st.Cluster.Version, lowest)
		}
		return nil
	})
	if err != nil {
		logf("going on without waiting for the cluster version: %v", err)
	}
}

// join joins n to the cluster through the current master, as `pmgcm join-cmd` on a member
// and `pmgcm join` on n do.
func (c *cluster) join(ctx context.Context, n *node) error {
	cctx, cancel := context.WithTimeout(ctx, 120*time.Second)
	defer cancel()
	var jc *api.JoinCmd
	var errs []error
	for _, m := range c.nodes {
		if m == n || m.cid == 0 || !m.running() {
			continue
		}
		var err error
		if jc, err = m.client.JoinCmd(cctx, false); err == nil {
			break
		}
		errs = append(errs, err)
	}
	if jc == nil {
		return fmt.Errorf("join-cmd: %w", errors.Join(errs...))
	}
	jr, err := n.client.Join(cctx, api.JoinRequest{Master: jc.Master, Fingerprint: jc.Fingerprint, Token: jc.Token})
	if err != nil {
		return fmt.Errorf("join %s: %w", n.name, err)
	}
	n.cid = jr.CID
	return nil
}

// waitActive waits until the status of every one of members shows exactly those members,
// all in state A, and a master among them.
func (c *cluster) waitActive(ctx context.Context, members []*node, timeout time.Duration) error {
	return testutil.WaitEvery(ctx, "all nodes in state A", timeout, 25*time.Millisecond, func() error {
		for _, n := range members {
			cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			st, err := n.client.Status(cctx)
			cancel()
			if err != nil {
				return err
			}
			if st.Cluster == nil || st.Cluster.LeaderCID == 0 {
				return fmt.Errorf("%s: no master", n.name)
			}
			if len(st.Nodes) != len(members) {
				return fmt.Errorf("%s: %d nodes in status, want %d", n.name, len(st.Nodes), len(members))
			}
			for _, row := range st.Nodes {
				if row.State != api.StateActive {
					return fmt.Errorf("%s: %s(%d) is in state %s %s", n.name, row.Name, row.CID, row.State, row.Error)
				}
			}
		}
		return nil
	})
}

// byCID returns the node with cid, or nil.
func (c *cluster) byCID(cid uint64) *node {
	for _, n := range c.nodes {
		if n.cid == cid && cid != 0 {
			return n
		}
	}
	return nil
}

// statuses asks each running member for its status, in order, and calls fn with the
// answer until fn returns false.
func (c *cluster) statuses(ctx context.Context, fn func(n *node, st *api.Status, err error) bool) {
	for _, n := range c.nodes {
		if n.cid == 0 || !n.running() {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		st, err := n.client.Status(cctx)
		cancel()
		if !fn(n, st, err) {
			return
		}
	}
}

// leader asks the running members for the master, and returns it.
func (c *cluster) leader(ctx context.Context) (*node, error) {
	var (
		last   error
		master *node
	)
	c.statuses(ctx, func(n *node, st *api.Status, err error) bool {
		switch {
		case err != nil:
			last = err
		case st.Cluster != nil && st.Cluster.LeaderCID != 0 && c.byCID(st.Cluster.LeaderCID) != nil:
			master = c.byCID(st.Cluster.LeaderCID)
			return false
		default:
			last = fmt.Errorf("%s knows no master", n.name)
		}
		return true
	})
	if master == nil {
		return nil, fmt.Errorf("no master: %v", last)
	}
	return master, nil
}

// observation is what the bench samples between workloads to count elections.
type observation struct {
	leader uint64
	term   uint64
}

// observe returns the master and the highest Raft term among the running members
// (each node's own row).
func (c *cluster) observe(ctx context.Context) observation {
	var o observation
	c.statuses(ctx, func(_ *node, st *api.Status, err error) bool {
		if err != nil {
			return true
		}
		if st.Cluster != nil && st.Cluster.LeaderCID != 0 {
			o.leader = st.Cluster.LeaderCID
		}
		for _, row := range st.Nodes {
			if row.Local {
				o.term = max(o.term, row.Term)
			}
		}
		return true
	})
	return o
}

// members returns the nodes that are members of the cluster.
func (c *cluster) members() []*node {
	var out []*node
	for _, n := range c.nodes {
		if n.cid != 0 {
			out = append(out, n)
		}
	}
	return out
}
