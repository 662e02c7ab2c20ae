package integration

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/internal/testutil"
)

// Failure drills of issue 4: master failure under writes, a paused master, promotion of a
// non-voter, a forced promote refused on a survivor that is behind, and a seeded chaos
// loop. Every drill runs real processes with the harness's 300ms Raft timeouts.

// drillElection is the election timeout the harness gives every daemon.
const drillElection = 300 * time.Millisecond

// TestKillMasterUnderWrites: kill -9 the master of 3 nodes while a writer streams config
// writes through a follower; a new master appears by itself, writes resume, no
// acknowledged write is lost, and the old master comes back as a node in state A.
func TestKillMasterUnderWrites(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3)
	c.form()
	old := c.master()
	survivors := drillOthers(c.Nodes, old)
	w := startDrillWriter(t, "kill", nil, func(*rand.Rand) *Node { return survivors[0] })

	w.waitAcks(t, 5, 20*time.Second)
	atKill := w.count()
	killedAt := time.Now()
	old.Kill()

	newMaster := drillWaitMaster(t, survivors, 15*time.Second)
	t.Logf("%s was master; after kill -9, %s is master within %s", old.Name, newMaster.Name, time.Since(killedAt).Round(time.Millisecond))
	elected := w.count()
	w.waitAcks(t, elected+5, 20*time.Second)
	acked := w.stop()
	t.Logf("writer: %d writes acknowledged (%d before the kill), %d failed", len(acked), atKill, w.failures())

	for _, n := range survivors {
		drillCheckKeys(t, n, acked)
	}
	old.Start()
	c.waitAllActive(c.Nodes, 30*time.Second)
	if r := selfRow(t, old); r.Role != api.RoleNode || r.State != api.StateActive {
		t.Fatalf("restarted old master is %s/%s, want node/A", r.Role, r.State)
	}
	drillCheckKeys(t, old, acked)
	drillWaitAgree(t, c.Nodes, 10*time.Second)
}

// TestPausedMasterStepsDown: SIGSTOP the master for longer than the election timeout
// while a write waits on its socket; the others elect a master and take writes; after
// SIGCONT the old master steps down and returns as a node, and a write it acknowledged
// is in the cluster.
func TestPausedMasterStepsDown(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3)
	c.form()
	old := c.master()
	survivors := drillOthers(c.Nodes, old)
	old.CLI("config", "set", "before/pause", "1")

	type result struct {
		out, errOut string
		err         error
	}
	pausedAt := time.Now()
	old.Pause()
	done := make(chan result, 1)
	go func() {
		// Sent while the daemon is stopped: it waits in the socket's backlog.
		out, errOut, err := old.run("config", "set", "paused/write", "from-paused-master")
		done <- result{out, errOut, err}
	}()

	newMaster := drillWaitMaster(t, survivors, 15*time.Second)
	t.Logf("%s paused; %s elected master after %s", old.Name, newMaster.Name, time.Since(pausedAt).Round(time.Millisecond))
	survivors[0].CLI("config", "set", "during/pause", "2")
	if d := 3*drillElection - time.Since(pausedAt); d > 0 {
		time.Sleep(d) // the pause must outlast three election timeouts
	}
	old.Resume()
	t.Logf("%s resumed after %s", old.Name, time.Since(pausedAt).Round(time.Millisecond))

	var res result
	select {
	case res = <-done:
	case <-time.After(45 * time.Second):
		t.Fatal("the write sent to the paused master did not return within 45s of SIGCONT")
	}
	acked := res.err == nil
	t.Logf("write through the paused master: acknowledged=%v %s%s", acked, strings.TrimSpace(res.out), strings.TrimSpace(res.errOut))
	if !acked {
		t.Logf("log of %s, the paused master, on the refusal:\n%s", old.Name, tail([]byte(old.Log()), 60))
	}

	c.waitAllActive(c.Nodes, 30*time.Second)
	drillWaitAgree(t, c.Nodes, 15*time.Second)
	if r := selfRow(t, old); r.Role != api.RoleNode {
		t.Fatalf("old master is %s after SIGCONT, want node", r.Role)
	}
	want := map[string]string{"before/pause": "1", "during/pause": "2"}
	if acked {
		want["paused/write"] = "from-paused-master"
	}
	for _, n := range c.Nodes {
		drillCheckKeys(t, n, want)
	}
}

// TestPromoteNonVoter: in a 4-node cluster (3 voters, 1 non-voter) promote on the
// non-voter makes it master and keeps the voter count at 3.
func TestPromoteNonVoter(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 4)
	c.form()
	st := mustDrillStatus(t, c.master())
	if v := voters(st); v != 3 {
		t.Fatalf("4-node cluster has %d voters, want 3: %s", v, drillRows(st))
	}
	nv := drillBySuffrage(t, c, st, "nonvoter")[0]
	t.Logf("promoting the non-voter %s: %s", nv.Name, drillRows(st))
	nv.CLI("promote")
	if r := selfRow(t, nv); r.Role != api.RoleMaster {
		t.Fatalf("after promote the non-voter %s is %s", nv.Name, r.Role)
	}
	nv.CLI("config", "set", "after/promote", "nonvoter")
	for _, n := range c.Nodes {
		testutil.Poll(t, n.Name+" sees 3 voters and the promoted node as voting master", 20*time.Second, func() error {
			st, err := n.Status()
			if err != nil {
				return err
			}
			if err := checkAllActive(st, drillIPs(c.Nodes)); err != nil {
				return err
			}
			if v := voters(st); v != 3 {
				return fmt.Errorf("%d voters: %s", v, drillRows(st))
			}
			for _, r := range st.Nodes {
				if r.IP == nv.IP && (r.Role != api.RoleMaster || r.Suffrage != "voter") {
					return fmt.Errorf("promoted node is %s/%s: %s", r.Role, r.Suffrage, drillRows(st))
				}
			}
			return nil
		})
	}
	drillWaitAgree(t, c.Nodes, 10*time.Second)
	for _, n := range c.Nodes {
		drillCheckKeys(t, n, map[string]string{"after/promote": "nonvoter"})
	}
}

// TestForcedPromoteRefusedWhenBehind: 4 nodes (3 voters, non-voter N). N is paused while
// writes commit, then two voters die: the quorum is lost with one voter V left. A forced
// promote on N, which is behind V, is refused and names V; on V it works.
func TestForcedPromoteRefusedWhenBehind(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 4)
	c.form()
	m := c.master()
	st := mustDrillStatus(t, m)
	nv := drillBySuffrage(t, c, st, "nonvoter")[0]
	var v *Node
	var dead []*Node
	for _, n := range drillBySuffrage(t, c, st, "voter") {
		if n != m && v == nil {
			v = n
		} else {
			dead = append(dead, n)
		}
	}
	vCID := selfRow(t, v).CID
	m.CLI("config", "set", "before/pause", "1")
	drillCheckKeys(t, nv, map[string]string{"before/pause": "1"})

	nv.Pause()
	want := map[string]string{"before/pause": "1"}
	for i := 0; i < 5; i++ {
		k, val := fmt.Sprintf("behind/k%d", i), fmt.Sprintf("v%d", i)
		m.CLI("config", "set", k, val)
		want[k] = val
	}
	drillCheckKeys(t, v, want) // V has applied every write: it holds the longest log
	for _, n := range dead {
		n.Kill()
	}
	nv.Resume()
	t.Logf("voters %s and %s killed; survivors: voter %s (cid %d), non-voter %s (behind)", dead[0].Name, dead[1].Name, v.Name, vCID, nv.Name)

	errOut := nv.CLIFail("promote", "--force", "--yes")
	if !strings.Contains(errOut, "longer log") || !strings.Contains(errOut, fmt.Sprintf("cid %d ", vCID)) || !strings.Contains(errOut, v.IP) {
		t.Fatalf("forced promote on the node that is behind said %q, want a refusal naming cid %d (%s) and its longer log", errOut, vCID, v.IP)
	}
	t.Logf("forced promote on %s refused: %s", nv.Name, strings.ReplaceAll(strings.TrimSpace(errOut), "\n", " | "))
	if r := selfRow(t, nv); r.Role == api.RoleMaster {
		t.Fatal("a refused forced promote made the node master")
	}
	if st := mustDrillStatus(t, nv); st.Cluster == nil || st.Cluster.Epoch != 1 {
		t.Fatalf("a refused forced promote changed the cluster: %+v", st.Cluster)
	}

	out := v.CLI("promote", "--force", "--yes")
	if !strings.Contains(out, "epoch 2") {
		t.Fatalf("forced promote on %s said %q", v.Name, out)
	}
	v.WaitMaster(10 * time.Second)
	v.CLI("config", "set", "after/force", "yes")
	want["after/force"] = "yes"
	drillCheckKeys(t, v, want)
	waitFenced(t, nv)
}

// TestChaosConverges: a seeded random sequence of kill -9 and restart, SIGSTOP and
// SIGCONT, and graceful promotes over 3 nodes under a writer, never more than one node
// down at a time; the cluster converges to one master with every acknowledged write on
// every node. PMGCM_CHAOS_SEED replays a run.
func TestChaosConverges(t *testing.T) {
	t.Parallel()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("PMGCM_CHAOS_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("PMGCM_CHAOS_SEED=%q: %v", s, err)
		}
	}
	t.Logf("chaos seed %d (replay with PMGCM_CHAOS_SEED=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))

	c := newCluster(t, 3)
	c.form()
	start := time.Now()
	w := startDrillWriter(t, "chaos", rand.New(rand.NewPCG(seed, 1)), func(r *rand.Rand) *Node { return c.Nodes[r.IntN(len(c.Nodes))] })

	for step := 0; step < 8; step++ {
		n := c.Nodes[rng.IntN(len(c.Nodes))]
		switch op := rng.IntN(3); op {
		case 0:
			t.Logf("step %d: kill -9 %s and restart it", step, n.Name)
			n.Kill()
			n.Start()
		case 1:
			d := 200*time.Millisecond + time.Duration(rng.IntN(1300))*time.Millisecond
			t.Logf("step %d: SIGSTOP %s for %s", step, n.Name, d)
			n.Pause()
			time.Sleep(d) // the fault lasts d
			n.Resume()
		case 2:
			t.Logf("step %d: promote on %s", step, n.Name)
			drillWaitFollowing(t, c.Nodes, 20*time.Second)
			out, errOut, err := n.run("promote")
			if err != nil {
				t.Fatalf("step %d: promote on %s with a quorum up failed: %v\n%s%s", step, n.Name, err, out, errOut)
			}
			if r := selfRow(t, n); r.Role != api.RoleMaster {
				t.Fatalf("step %d: promote on %s returned, but it is %s", step, n.Name, r.Role)
			}
		}
		// Never more than one node down: the node just hit must follow a master again
		// before the next fault.
		drillWaitFollowing(t, c.Nodes, 20*time.Second)
		t.Logf("step %d: every node follows one master at %s", step, time.Since(start).Round(time.Millisecond))
	}
	w.waitAcks(t, w.count()+3, 20*time.Second)
	acked := w.stop()
	t.Logf("chaos steps took %s; writer: %d acknowledged, %d failed", time.Since(start).Round(time.Millisecond), len(acked), w.failures())

	c.waitAllActive(c.Nodes, 30*time.Second)
	drillWaitAgree(t, c.Nodes, 15*time.Second)
	for _, n := range c.Nodes {
		drillCheckKeys(t, n, acked)
	}
}

// ackLoop runs a background load in a loop and keeps what it got acknowledged (key ->
// value) and how many attempts failed; stop ends it and returns the acknowledged ones.
type ackLoop struct {
	mu     sync.Mutex
	acked  map[string]string
	failed int
	quit   chan struct{}
	done   chan struct{}
}

// startAckLoop runs attempt(i) for i = 0, 1, ... until stopped (at the latest at the end
// of the test), recording a nil error as key acknowledged with val; after a failure it
// waits pace (a retry pace, not a wait for a state), after a success rest.
func startAckLoop(t testing.TB, rest, pace time.Duration, attempt func(i int) (key, val string, err error)) *ackLoop {
	l := &ackLoop{acked: map[string]string{}, quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		for i := 0; ; i++ {
			select {
			case <-l.quit:
				return
			default:
			}
			key, val, err := attempt(i)
			l.mu.Lock()
			if err == nil {
				l.acked[key] = val
			} else {
				l.failed++
			}
			l.mu.Unlock()
			pause := rest
			if err != nil {
				pause = pace
			}
			if pause > 0 {
				time.Sleep(pause) // a pace of the load, not a wait for a state
			}
		}
	}()
	t.Cleanup(func() { l.stop() })
	return l
}

func (l *ackLoop) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acked)
}

func (l *ackLoop) failures() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.failed
}

// stop ends the loop, waits for its last attempt, and returns the acknowledged ones.
func (l *ackLoop) stop() map[string]string {
	select {
	case <-l.quit:
	default:
		close(l.quit)
	}
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]string, len(l.acked))
	for k, v := range l.acked {
		out[k] = v
	}
	return out
}

// drillWriter writes unique keys one after the other through the node pick chooses (with
// rng, used by the writer's goroutine only) and records each acknowledged write.
type drillWriter struct{ *ackLoop }

func startDrillWriter(t testing.TB, prefix string, rng *rand.Rand, pick func(*rand.Rand) *Node) *drillWriter {
	return &drillWriter{startAckLoop(t, 0, 50*time.Millisecond, func(i int) (string, string, error) {
		key, val := fmt.Sprintf("%s/k%05d", prefix, i), fmt.Sprintf("v%d-%d", i, time.Now().UnixNano())
		_, _, err := pick(rng).run("config", "set", "--timeout", "10s", key, val)
		return key, val, err
	})}
}

// waitAcks waits until at least n writes have been acknowledged.
func (w *drillWriter) waitAcks(t testing.TB, n int, timeout time.Duration) {
	t.Helper()
	testutil.Poll(t, fmt.Sprintf("%d acknowledged writes", n), timeout, func() error {
		if got := w.count(); got < n {
			return fmt.Errorf("%d acknowledged, %d failed", got, w.failures())
		}
		return nil
	})
}

// drillOthers returns nodes without x.
func drillOthers(nodes []*Node, x *Node) []*Node {
	var out []*Node
	for _, n := range nodes {
		if n != x {
			out = append(out, n)
		}
	}
	return out
}

func drillIPs(nodes []*Node) map[string]bool {
	m := map[string]bool{}
	for _, n := range nodes {
		m[n.IP] = true
	}
	return m
}

func mustDrillStatus(t testing.TB, n *Node) api.Status {
	t.Helper()
	st, err := n.Status()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// drillWaitMaster waits until every one of nodes names the same master, one of nodes,
// and returns it. The nodes are asked at once: a status call waits up to 1.5s for a
// node that is paused.
func drillWaitMaster(t testing.TB, nodes []*Node, timeout time.Duration) *Node {
	t.Helper()
	var m *Node
	testutil.Poll(t, "a master among the survivors", timeout, func() error {
		rows, err := drillSelves(nodes)
		if err != nil {
			return err
		}
		cid := rows[0].MasterCID
		for i, r := range rows {
			if r.MasterCID == 0 || r.MasterCID != cid {
				return fmt.Errorf("%s follows master cid %d, %s cid %d", nodes[i].Name, r.MasterCID, nodes[0].Name, cid)
			}
		}
		for i, r := range rows {
			if r.CID == cid && r.Role == api.RoleMaster {
				m = nodes[i]
				return nil
			}
		}
		return fmt.Errorf("master cid %d is none of %d nodes asked", cid, len(nodes))
	})
	return m
}

// drillSelves returns the own row of each of nodes, asked in parallel.
func drillSelves(nodes []*Node) ([]api.Node, error) {
	rows := make([]api.Node, len(nodes))
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rows[i], errs[i] = drillSelf(n)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return rows, nil
}

// drillWaitFollowing waits until every running node of nodes follows the same master.
func drillWaitFollowing(t testing.TB, nodes []*Node, timeout time.Duration) {
	t.Helper()
	var live []*Node
	for _, n := range nodes {
		if !n.Exited() {
			live = append(live, n)
		}
	}
	drillWaitMaster(t, live, timeout)
}

// drillSelf returns n's own row.
func drillSelf(n *Node) (api.Node, error) {
	st, err := n.Status()
	if err != nil {
		return api.Node{}, err
	}
	for _, r := range st.Nodes {
		if r.Local {
			return r, nil
		}
	}
	return api.Node{}, fmt.Errorf("%s: no local row in status", n.Name)
}

// drillBySuffrage returns the nodes of c whose suffrage in st is s, in order.
func drillBySuffrage(t testing.TB, c *Cluster, st api.Status, s string) []*Node {
	t.Helper()
	var out []*Node
	for _, n := range c.Nodes {
		for _, r := range st.Nodes {
			if r.IP == n.IP && r.Suffrage == s {
				out = append(out, n)
			}
		}
	}
	if len(out) == 0 {
		t.Fatalf("no %s in %s", s, drillRows(st))
	}
	return out
}

// drillRows describes st's rows, for messages.
func drillRows(st api.Status) string {
	var s []string
	for _, r := range st.Nodes {
		s = append(s, fmt.Sprintf("%s(%d)=%s/%s/%s", r.Name, r.CID, r.Suffrage, r.Role, r.State))
	}
	return strings.Join(s, " ")
}

// drillView is the cluster as one node sees it; all nodes must see the same.
func drillView(st api.Status) string {
	if st.Cluster == nil {
		return "<no cluster>"
	}
	var rows []string
	for _, r := range st.Nodes {
		rows = append(rows, fmt.Sprintf("%d %s %s %s %s", r.CID, r.IP, r.Role, r.State, r.Suffrage))
	}
	slices.Sort(rows)
	return fmt.Sprintf("%s epoch %d master %d | %s", st.Cluster.ID, st.Cluster.Epoch, st.Cluster.LeaderCID, strings.Join(rows, " | "))
}

// drillWaitAgree waits until every node reports the same cluster with one master, all
// nodes in state A.
func drillWaitAgree(t testing.TB, nodes []*Node, timeout time.Duration) {
	t.Helper()
	want := drillIPs(nodes)
	testutil.Poll(t, "every node agrees on one master, all in state A", timeout, func() error {
		var first string
		for i, n := range nodes {
			st, err := n.Status()
			if err != nil {
				return err
			}
			if err := checkAllActive(st, want); err != nil {
				return fmt.Errorf("%s: %v", n.Name, err)
			}
			v := drillView(st)
			if i == 0 {
				first = v
			} else if v != first {
				return fmt.Errorf("%s sees\n  %s\n%s sees\n  %s", nodes[0].Name, first, n.Name, v)
			}
		}
		return nil
	})
}

// drillCheckKeys fails the test unless n's configuration (a linearizable read) holds
// every key of want with its value. Only a failing read is retried.
func drillCheckKeys(t testing.TB, n *Node, want map[string]string) {
	t.Helper()
	var out string
	testutil.Poll(t, n.Name+" config list", 15*time.Second, func() error {
		var err error
		out, _, err = n.run("config", "list", "-o", "json")
		return err
	})
	var list []api.ConfigEntry
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("%s: decode config list: %v\n%s", n.Name, err, out)
	}
	have := map[string]string{}
	for _, e := range list {
		if e.Value != nil {
			have[e.Key] = *e.Value
		}
	}
	var bad []string
	for k, v := range want {
		if got, ok := have[k]; !ok {
			bad = append(bad, k+" missing")
		} else if got != v {
			bad = append(bad, fmt.Sprintf("%s=%q, want %q", k, got, v))
		}
	}
	if len(bad) > 0 {
		slices.Sort(bad)
		t.Fatalf("%s lost %d of %d acknowledged writes: %s", n.Name, len(bad), len(want), strings.Join(bad, "; "))
	}
}
