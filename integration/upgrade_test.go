package integration

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/internal/testutil"
	"github.com/pmgcm/pmgcm/internal/version"
)

// The upgrade drill: a cluster of the previous release (RELEASES), built from the
// repository's history, is upgraded node by node to this build under configuration
// writes and SMTP mail; every acknowledged write and every 250'd message must be on every
// node at the end. The suite runs one short pass; make upgrade-drill a longer one:
// PMGCM_UPGRADE_WRITES acknowledged writes per step (default 15) and PMGCM_UPGRADE_ROUNDS
// rolling restarts of the upgraded cluster (default 0).

// upgradeEnvInt reads a positive integer setting of the drill.
func upgradeEnvInt(t testing.TB, name string, def int) int {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	v, err := strconv.Atoi(s)
	if err != nil || v < 0 {
		t.Fatalf("%s=%q: want a number", name, s)
	}
	return v
}

// upNodes is the set of nodes the writers and the mail sender may use: a node is taken
// out before it is stopped and put back once it is running again.
type upNodes struct {
	mu   sync.Mutex
	all  []*Node
	down map[*Node]bool
}

func newUpNodes(nodes []*Node) *upNodes {
	return &upNodes{all: nodes, down: map[*Node]bool{}}
}

func (u *upNodes) set(n *Node, up bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.down[n] = !up
}

func (u *upNodes) pick(rng *rand.Rand) *Node {
	u.mu.Lock()
	defer u.mu.Unlock()
	var up []*Node
	for _, n := range u.all {
		if !u.down[n] {
			up = append(up, n)
		}
	}
	return up[rng.IntN(len(up))]
}

// mailSender sends small messages to the SMTP port of a node picked from up, one after
// the other, and keeps the subject and SHA-256 of every message that got its 250.
type mailSender struct{ *ackLoop }

func startMailSender(t testing.TB, mc *mailCluster, up *upNodes, rng *rand.Rand) *mailSender {
	return &mailSender{startAckLoop(t, 30*time.Millisecond, 30*time.Millisecond, func(i int) (string, string, error) {
		subject := fmt.Sprintf("upgrade-%05d", i)
		msg := mailMsg(subject, 1500)
		return subject, sha(msg), sendOne(mc.addr(up.pick(rng)), []string{"user@" + mailDomain}, msg)
	})}
}

// waitProgress waits until the writer has n more acknowledged writes and the sender
// one more 250'd message than now.
func waitProgress(t testing.TB, w *drillWriter, s *mailSender, n int) {
	t.Helper()
	w.waitAcks(t, w.count()+n, 90*time.Second)
	want := s.count() + 1
	testutil.Poll(t, "one more message accepted", 60*time.Second, func() error {
		if got := s.count(); got < want {
			return fmt.Errorf("%d messages accepted", got)
		}
		return nil
	})
}

// restartWith stops n (SIGTERM: it must exit 0), switches it to the build in dir ("":
// this one) and starts it on the same data directory, then waits until every node is
// active again.
func restartWith(t testing.TB, mc *mailCluster, up *upNodes, n *Node, dir string) {
	t.Helper()
	up.set(n, false)
	n.Stop()
	n.setBinDir(dir)
	n.Start()
	mc.waitAllActive(mc.Nodes, 90*time.Second)
	up.set(n, true)
}

// statusRows returns n's status, failing the test after retries.
func statusOf(t testing.TB, n *Node) api.Status {
	t.Helper()
	var st api.Status
	testutil.Poll(t, n.Name+" status", 20*time.Second, func() error {
		var err error
		st, err = n.Status()
		if err == nil && st.Cluster == nil {
			err = fmt.Errorf("no cluster in the status")
		}
		return err
	})
	return st
}

// TestUpgradeRolling forms a 3-node cluster of the previous release, upgrades it node by
// node (followers first, the master last) under writes through the running nodes and SMTP
// mail, checks the versions in status on the way (the cluster version stays at the old
// level while a member runs the old build and is recorded once all run this one), checks
// that a node of the old release is then refused at join with both versions named, and
// that every acknowledged write and every 250'd message is on every node.
func TestUpgradeRolling(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the previous release")
	}
	rel := previousRelease(t)
	old := releaseBinaries(t, rel)
	perStep := upgradeEnvInt(t, "PMGCM_UPGRADE_WRITES", 15)
	rounds := upgradeEnvInt(t, "PMGCM_UPGRADE_ROUNDS", 0)

	mc := newMailCluster(t, 4, false)
	late := mc.Nodes[3]  // an old-release node that tries to join the upgraded cluster
	t.Cleanup(late.kill) // not in mc.Nodes below
	for _, n := range mc.Nodes {
		n.setBinDir(old)
	}
	mc.formNodes(3)
	nodes := mc.Nodes[:3]
	mc.Nodes = nodes
	setConfig(t, nodes, "mail/relay_domains", mailDomain)
	if st := statusOf(t, nodes[0]); st.Cluster.Version != 0 || localRow(st).Version != "" {
		t.Fatalf("release %s reports a version (cluster %d, node %q): is RELEASES right?", rel.Name,
			st.Cluster.Version, localRow(st).Version)
	}

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 13))
	up := newUpNodes(nodes)
	w := startDrillWriter(t, "upgrade", rand.New(rand.NewPCG(rng.Uint64(), 1)), up.pick)
	s := startMailSender(t, mc, up, rand.New(rand.NewPCG(rng.Uint64(), 2)))
	waitProgress(t, w, s, perStep)

	master, followers := mc.roles()
	order := append(followers, master)
	for i, n := range order {
		restartWith(t, mc, up, n, "")
		st := statusOf(t, n)
		me := localRow(st)
		if me.Version != version.Version || me.Level != version.Level {
			t.Errorf("upgraded %s reports version %q level %d, want %q level %d", n.Name, me.Version, me.Level,
				version.Version, version.Level)
		}
		if i < len(order)-1 {
			// Mixed: old members show as such, the cluster stays at the old level.
			if st.Cluster.Version != version.LevelRelease010 {
				t.Errorf("mixed cluster at version %d, want %d", st.Cluster.Version, version.LevelRelease010)
			}
			for _, r := range st.Nodes {
				if r.State != api.StateDown && r.Version == "" {
					t.Errorf("status of %s: %s has no version", n.Name, r.Name)
				}
			}
		}
		waitProgress(t, w, s, perStep)
	}

	// All upgraded: the master records the cluster version, every node shows it.
	for _, n := range nodes {
		testutil.Poll(t, n.Name+" shows the new cluster version", 60*time.Second, func() error {
			st, err := n.Status()
			if err != nil {
				return err
			}
			if st.Cluster == nil || st.Cluster.Version != version.Level {
				return fmt.Errorf("cluster version %+v", st.Cluster)
			}
			for _, r := range st.Nodes {
				if r.Version != version.Version {
					return fmt.Errorf("%s reports version %q", r.Name, r.Version)
				}
			}
			return nil
		})
	}
	waitProgress(t, w, s, perStep)

	// A node of the old release is refused now, with both versions named.
	late.Start()
	errOut := late.CLIFail(append(joinArgs(t, nodes[0]), "--yes")...)
	t.Logf("join of a %s node refused: %s", rel.Name, strings.TrimSpace(errOut))
	if !strings.Contains(errOut, version.LevelName(version.Level)) || !strings.Contains(errOut, "0.1.0") {
		t.Errorf("join of a %s node into a cluster at %s: %s, want both versions named", rel.Name,
			version.LevelName(version.Level), errOut)
	}

	for r := 0; r < rounds; r++ {
		master, followers := mc.roles()
		for _, n := range append(followers, master) {
			restartWith(t, mc, up, n, "")
			waitProgress(t, w, s, perStep)
		}
	}

	acked, mail := w.stop(), s.stop()
	t.Logf("upgrade from %s: %d acknowledged writes (%d failed), %d messages accepted (%d failed), %d rolling rounds after",
		rel.Name, len(acked), w.failures(), len(mail), s.failures(), rounds)
	for _, n := range nodes {
		drillCheckKeys(t, n, acked)
	}
	waitMail(t, nodes, mail, 90*time.Second)
}

// TestUpgradeMixedCluster: two nodes of the previous release form a cluster and a node
// of this build joins it (join into an old cluster); the mixed cluster takes writes through
// every node and mail on every node, keeps the old cluster version, and keeps working
// when its master stops and another node (of either build) takes over.
func TestUpgradeMixedCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the previous release")
	}
	rel := previousRelease(t)
	old := releaseBinaries(t, rel)
	mc := newMailCluster(t, 3, false)
	mc.Nodes[0].setBinDir(old)
	mc.Nodes[1].setBinDir(old)
	mc.form() // node3, of this build, joins with the join-cmd line of the old master
	setConfig(t, mc.Nodes, "mail/relay_domains", mailDomain)

	st := statusOf(t, mc.Nodes[2])
	if st.Cluster.Version != version.LevelRelease010 {
		t.Errorf("cluster version with two %s members: %d, want %d", rel.Name, st.Cluster.Version, version.LevelRelease010)
	}
	for _, r := range st.Nodes {
		want := "<=0.1.0"
		if r.CID == localRow(st).CID {
			want = version.Version
		}
		if r.Version != want {
			t.Errorf("%s shows version %q, want %q", r.Name, r.Version, want)
		}
	}
	if !strings.Contains(strings.Join(st.Cluster.Warnings, "\n"), "different feature levels") {
		t.Errorf("no warning of the mixed cluster: %q", st.Cluster.Warnings)
	}

	// A token that expires is refused while a member runs the old release, which as
	// master would admit with it after its expiry; one that does not expire is made.
	msg := mc.Nodes[2].CLIFail("join-cmd", "--ttl", "30m")
	mustContain(t, "join-cmd --ttl in the mixed cluster", msg, "release 0.1.0", "upgrade it first", "without --ttl")
	mc.Nodes[2].CLI("join-cmd", "--rotate")

	want := map[string]string{}
	mail := map[string]string{}
	writeAll := func(round int, nodes []*Node) {
		for _, n := range nodes {
			key, val := fmt.Sprintf("mixed/%s-%d", n.Name, round), fmt.Sprintf("v%d", round)
			cliRetry(t, n, "config", "set", key, val)
			want[key] = val
			subject := fmt.Sprintf("mixed-%s-%d", n.Name, round)
			msg := mailMsg(subject, 3000)
			mustSend(t, mc.addr(n), msg)
			mail[subject] = sha(msg)
		}
		for _, n := range nodes {
			drillCheckKeys(t, n, want)
		}
		waitMail(t, nodes, mail, 60*time.Second)
	}
	writeAll(1, mc.Nodes)

	// The master stops; the others elect one of them and go on.
	master, followers := mc.roles()
	master.Stop()
	drillWaitMaster(t, followers, 30*time.Second)
	writeAll(2, followers)
	master.Start()
	mc.waitAllActive(mc.Nodes, 60*time.Second)
	writeAll(3, mc.Nodes)
	if st := statusOf(t, mc.Nodes[2]); st.Cluster.Version != version.LevelRelease010 {
		t.Errorf("cluster version went to %d with %s members", st.Cluster.Version, rel.Name)
	}
}
