package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/internal/testutil"
	"github.com/pmgcm/pmgcm/transport"
)

func init() {
	// The race detector makes every instrumented process sleep 1s at exit
	// (atexit_sleep_ms=1000) to let other goroutines finish their reports: each pmgcm
	// run would take over a second, and these tests run hundreds. A short pause is
	// enough here; an explicit GORACE wins.
	if os.Getenv("GORACE") == "" {
		_ = os.Setenv("GORACE", "atexit_sleep_ms=50")
	}
}

// localRow returns the row of the node that answered st, or nil.
func localRow(st api.Status) *api.Node {
	for i := range st.Nodes {
		if st.Nodes[i].Local {
			return &st.Nodes[i]
		}
	}
	return nil
}

// mustStatus returns n's status, failing the test on error.
func mustStatus(t testing.TB, n *Node) api.Status {
	t.Helper()
	st, err := n.Status()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// membersOf describes the member list of st as sorted "cid name ip" lines.
func membersOf(st api.Status) string {
	var rows []string
	for _, r := range st.Nodes {
		rows = append(rows, fmt.Sprintf("%d %s %s", r.CID, r.Name, r.IP))
	}
	slices.Sort(rows)
	return strings.Join(rows, "; ")
}

// clusterView is what must not change on a member when a join is refused: the cluster
// identity, the member list and the configuration.
type clusterView struct {
	ClusterID string
	Members   string
	Config    string
}

func viewOf(t testing.TB, n *Node) clusterView {
	t.Helper()
	st := mustStatus(t, n)
	if st.Cluster == nil {
		t.Fatalf("%s is in no cluster: %+v", n.Name, st)
	}
	b, err := json.Marshal(configList(t, n))
	if err != nil {
		t.Fatal(err)
	}
	return clusterView{ClusterID: st.Cluster.ID, Members: membersOf(st), Config: string(b)}
}

// checkUnchanged fails the test if n's view differs from before.
func checkUnchanged(t testing.TB, what string, n *Node, before clusterView) {
	t.Helper()
	if got := viewOf(t, n); got != before {
		t.Fatalf("after %s, %s changed:\nbefore %+v\nafter  %+v", what, n.Name, before, got)
	}
}

// checkStandalone fails the test unless n is still a standalone node (no cluster) whose
// configuration entry key still holds val.
func checkStandalone(t testing.TB, what string, n *Node, key, val string) {
	t.Helper()
	st := mustStatus(t, n)
	if st.Cluster != nil || len(st.Nodes) != 1 || st.Nodes[0].Role != api.RoleNone {
		t.Fatalf("after %s, %s is no longer standalone: %+v", what, n.Name, st)
	}
	if got := n.CLI("config", "get", key); got != val {
		t.Fatalf("after %s, %s: config get %s = %q, want %q", what, n.Name, key, got, val)
	}
}

// waitMembersVoters polls n's status until it lists nodes members of which voters are
// voters, all of them active.
func waitMembersVoters(t testing.TB, n *Node, nodes, wantVoters int, timeout time.Duration) {
	t.Helper()
	testutil.Poll(t, fmt.Sprintf("%s sees %d nodes with %d voters", n.Name, nodes, wantVoters), timeout, func() error {
		st, err := n.Status()
		if err != nil {
			return err
		}
		if len(st.Nodes) != nodes || voters(st) != wantVoters {
			return fmt.Errorf("%d nodes, %d voters: %s", len(st.Nodes), voters(st), suffrages(st))
		}
		return nil
	})
}

// suffrages describes each row's CID, suffrage, role and state, for error messages.
func suffrages(st api.Status) string {
	var s []string
	for _, r := range st.Nodes {
		s = append(s, fmt.Sprintf("%s(%d)=%s/%s/%s", r.Name, r.CID, r.Suffrage, r.Role, r.State))
	}
	return strings.Join(s, " ")
}

// agreement describes the cluster as one node sees it; every member must see the same.
func agreement(st api.Status) string {
	var rows []string
	for _, r := range st.Nodes {
		rows = append(rows, fmt.Sprintf("%d %s %s %s %s %s %s", r.CID, r.Name, r.IP, r.Role, r.State, r.Suffrage, r.Fingerprint))
	}
	slices.Sort(rows)
	id := "<none>"
	if st.Cluster != nil {
		id = fmt.Sprintf("%s epoch %d master %d", st.Cluster.ID, st.Cluster.Epoch, st.Cluster.LeaderCID)
	}
	return id + " | " + strings.Join(rows, " | ")
}

// waitAgree polls until every one of nodes reports the same cluster (identity, members,
// roles, states and suffrage).
func waitAgree(t testing.TB, nodes []*Node, timeout time.Duration) {
	t.Helper()
	testutil.Poll(t, "status agrees on every node", timeout, func() error {
		var first string
		for i, n := range nodes {
			st, err := n.Status()
			if err != nil {
				return err
			}
			a := agreement(st)
			if i == 0 {
				first = a
			} else if a != first {
				return fmt.Errorf("%s sees\n  %s\n%s sees\n  %s", nodes[0].Name, first, n.Name, a)
			}
		}
		return nil
	})
}

var joinedRe = regexp.MustCompile(`joined cluster (\S+) as cid (\d+) \(master ([^)]*)\)`)

// parseJoined returns the cluster, CID and master address that `pmgcm join` printed.
func parseJoined(t testing.TB, out string) (cluster string, cid uint64, master string) {
	t.Helper()
	m := joinedRe.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("pmgcm join printed no \"joined cluster ... as cid N (master ...)\" line:\n%s", out)
	}
	cid, err := strconv.ParseUint(m[2], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return m[1], cid, m[3]
}

// withToken returns a copy of join arguments (as joinArgs returns them) with another token.
func withToken(args []string, token string) []string {
	out := slices.Clone(args)
	out[len(out)-1] = token
	return out
}

// joinVia returns join arguments that reach the cluster through member via, pinning via's
// own fingerprint (join-cmd always prints the master's).
func joinVia(t testing.TB, via *Node, token string) []string {
	t.Helper()
	row := localRow(mustStatus(t, via))
	if row == nil || row.Fingerprint == "" {
		t.Fatalf("%s's status has no local row with a fingerprint", via.Name)
	}
	return []string{"join", net.JoinHostPort(via.IP, strconv.Itoa(via.Port)), "--fingerprint", row.Fingerprint, "--token", token}
}

// mustContain fails the test unless s contains every one of subs.
func mustContain(t testing.TB, what, s string, subs ...string) {
	t.Helper()
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			t.Fatalf("%s: %q does not contain %q", what, s, sub)
		}
	}
}

// identityOf builds a TLS client with node n's current certificate, key and cluster CA,
// read from its data directory, so that a test can speak to other nodes as n.
func identityOf(t testing.TB, n *Node) *transport.Mux {
	t.Helper()
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(n.DataDir, "tls", name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	id, err := transport.NewIdentity(read("node.crt"), read("node.key"), read("ca.crt"))
	if err != nil {
		t.Fatalf("identity of %s: %v", n.Name, err)
	}
	m, err := transport.New(transport.DefaultConfig(net.JoinHostPort("127.0.0.1", "0")), id)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

// dialRPC opens (and closes) a cluster RPC connection from mux to node to, reporting
// whether to accepted it.
func dialRPC(mux *transport.Mux, to *Node) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := mux.Dial(ctx, net.JoinHostPort(to.IP, strconv.Itoa(to.Port)), transport.ChanRPC)
	if err != nil {
		return err
	}
	return conn.Close()
}

// rpcNodePath is the daemon's cluster RPC that answers a node's own status row, read
// live from its Raft instance (daemon/rpc.go: rpcNode).
const rpcNodePath = "/rpc/v1/node"

// raftVoters asks each of nodes, over the cluster RPC with as's certificate, for its own
// Raft suffrage (from its Raft configuration, not the member list), and counts the voters.
func raftVoters(t testing.TB, as *Node, nodes []*Node) (int, string, error) {
	t.Helper()
	client := identityOf(t, as).HTTPClient(transport.ChanRPC)
	defer client.CloseIdleConnections()
	v := 0
	var desc []string
	for _, n := range nodes {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+net.JoinHostPort(n.IP, strconv.Itoa(n.Port))+rpcNodePath, nil)
		if err != nil {
			cancel()
			return 0, "", err
		}
		resp, err := client.Do(req)
		if err != nil {
			cancel()
			return 0, "", fmt.Errorf("ask %s for its raft suffrage: %w", n.Name, err)
		}
		var row api.Node
		err = json.NewDecoder(resp.Body).Decode(&row)
		_ = resp.Body.Close()
		cancel()
		if resp.StatusCode != http.StatusOK || err != nil {
			return 0, "", fmt.Errorf("ask %s for its raft suffrage: %s %v", n.Name, resp.Status, err)
		}
		if row.Suffrage == "voter" {
			v++
		}
		desc = append(desc, fmt.Sprintf("%s(%d)=%s", n.Name, row.CID, row.Suffrage))
	}
	return v, strings.Join(desc, " "), nil
}

// waitRaftVoters polls until exactly want of nodes are voters by their own Raft
// configuration.
func waitRaftVoters(t testing.TB, as *Node, nodes []*Node, want int, timeout time.Duration) {
	t.Helper()
	testutil.Poll(t, fmt.Sprintf("%d raft voters among %d nodes", want, len(nodes)), timeout, func() error {
		v, desc, err := raftVoters(t, as, nodes)
		if err != nil {
			return err
		}
		if v != want {
			return fmt.Errorf("%d raft voters: %s", v, desc)
		}
		return nil
	})
}

// logNotable prints, if the test fails, the lines of each node's log that say what
// happened to its membership (the harness shows only each log's tail, which a refused
// node fills with refusals).
func logNotable(t testing.TB, c *Cluster) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		re := regexp.MustCompile(`removed|superseded|fenced|standing|joined|admitted|promoted|demoted|deleted|created|stopping raft|\[ERROR\]`)
		noise := regexp.MustCompile(`dial failed|connection refused|failed to heartbeat|failed to appendEntries|failed to make requestVote`)
		for _, n := range c.Nodes {
			var keep []string
			for _, l := range strings.Split(n.Log(), "\n") {
				if re.MatchString(l) && !noise.MatchString(l) {
					keep = append(keep, l)
				}
			}
			if len(keep) > 60 {
				keep = keep[len(keep)-60:]
			}
			t.Logf("==== membership events of %s (%s) ====\n%s", n.Name, n.IP, strings.Join(keep, "\n"))
		}
	})
}

// transientRe matches the errors of a command that met an election: the operator's answer
// is to run it again, and so is the test's.
var transientRe = regexp.MustCompile(`no master elected|is not the master|leadership lost|raft operation timed out`)

// cliRetry runs pmgcm on n like Node.CLI, but runs it again while it fails only because
// no master was elected at that moment (a busy machine makes elections more frequent).
func cliRetry(t testing.TB, n *Node, args ...string) string {
	t.Helper()
	var out string
	// Every 200 ms, not faster: an election takes a few hundred, and each attempt is a
	// pmgcm process.
	err := testutil.WaitEvery(context.Background(), "pmgcm "+strings.Join(args, " ")+" on "+n.Name, 20*time.Second, 200*time.Millisecond, func() error {
		o, errOut, err := n.run(args...)
		if err != nil && !transientRe.MatchString(errOut) {
			return testutil.Stop(fmt.Errorf("%w: %s", err, errOut))
		}
		if err != nil {
			return err
		}
		out = o
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// joinArgsRetry is joinArgs, tolerant of an election in progress.
func joinArgsRetry(t testing.TB, n *Node) []string {
	t.Helper()
	return parseJoinLine(t, cliRetry(t, n, "join-cmd"))
}
