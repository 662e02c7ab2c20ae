package daemon

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/cluster"
	"github.com/pmgcm/pmgcm/fsm"
	"github.com/pmgcm/pmgcm/internal/version"
)

// nodeInfoRT answers PathNode for each address from levels (0: a release 0.1.0 node,
// which reports no level) and records who was asked.
type nodeInfoRT struct {
	levels map[string]int
	mu     sync.Mutex
	asked  map[string]bool
}

func (rt *nodeInfoRT) RoundTrip(r *http.Request) (*http.Response, error) {
	rt.mu.Lock()
	rt.asked[r.URL.Host] = true
	rt.mu.Unlock()
	n := api.Node{Name: r.URL.Host}
	if l := rt.levels[r.URL.Host]; l != 0 {
		n.Version, n.Level = "v0.2.0", l
	}
	b, _ := json.Marshal(n)
	return &http.Response{StatusCode: http.StatusOK, Header: http.Header{"Content-Type": {"application/json"}},
		Body: io.NopCloser(strings.NewReader(string(b))), Request: r}, nil
}

// TestClusterVersionCountsFencedMembers: a member fenced by a forced promotion is still a
// member, and `pmgcm sync` re-admits it without asking its build. If the master raised
// the cluster version past a fenced release 0.1.0 node's level, that node would come
// back into a cluster whose log and snapshots it cannot read (its snapshot decoder
// refuses the cluster record's version field). So the fenced member's level counts: the
// version stays at level 1.
func TestClusterVersionCountsFencedMembers(t *testing.T) {
	d := &Daemon{fsm: fsm.New(), logger: hclog.NewNullLogger(), stop: make(chan struct{})}
	d.cfg.RPCTimeout = time.Second
	self := fsm.Member{CID: 1, Name: "pmg1", IP: "127.0.0.1", Port: 8006, Fingerprint: "AA:01", Suffrage: fsm.Voter}
	d.node.Store(&nodeFile{Name: "pmg1", IP: "127.0.0.1", Port: 8006, CID: 1, Joined: true})
	applyTo(t, d.fsm, 1, fsm.CreateCluster{ClusterID: "c", CreatedAt: time.Now(), Founder: self})
	applyTo(t, d.fsm, 2, fsm.AddMember{Member: fsm.Member{CID: 2, Name: "pmg2", IP: "127.0.0.2", Port: 8006, Fingerprint: "AA:02", Suffrage: fsm.Voter}})
	applyTo(t, d.fsm, 3, fsm.AddMember{Member: fsm.Member{CID: 3, Name: "pmg3", IP: "127.0.0.3", Port: 8006, Fingerprint: "AA:03", Suffrage: fsm.Voter}})
	// A forced promotion on pmg1 kept pmg2 and fenced pmg3, a release 0.1.0 node.
	epoch := d.fsm.Cluster().Epoch + 1
	m1, _ := d.fsm.Member(1)
	m2, _ := d.fsm.Member(2)
	m3, _ := d.fsm.Member(3)
	m1.Epoch, m2.Epoch = epoch, epoch
	applyTo(t, d.fsm, 4, fsm.SetEpoch{Epoch: epoch, Members: []fsm.Member{m1, m2, m3}})
	if m, _ := d.fsm.Member(3); !m.Fenced(epoch) {
		t.Fatal("test setup: pmg3 is not fenced")
	}
	rt := &nodeInfoRT{levels: map[string]int{"127.0.0.2:8006": version.LevelClusterVersion}, asked: map[string]bool{}}
	d.peer = cluster.NewClient(&http.Client{Transport: rt})

	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("the master proposed SetClusterVersion with a fenced release 0.1.0 member (asked %v): %v", rt.asked, r)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := d.recordClusterVersion(ctx); err != nil {
		t.Fatalf("recordClusterVersion: %v", err)
	}
	if !rt.asked["127.0.0.3:8006"] {
		t.Errorf("the fenced member was not asked for its level (asked %v)", rt.asked)
	}
	if v := d.fsm.ClusterVersion(); v != version.LevelRelease010 {
		t.Errorf("cluster version %d, want %d", v, version.LevelRelease010)
	}
}
