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

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/fsm"
	"github.com/pmgcm/pmgcm/internal/version"
)

// TestClusterVersionCountsFencedMembers: a member fenced by a forced promotion is still a
// member, and `pmgcm sync` re-admits it without asking its build. If the master raised
// the cluster version past a fenced release 0.1.0 node's level, that node would come
// back into a cluster whose log and snapshots it cannot read (its snapshot decoder
// refuses the cluster record's version field). So the fenced member's level counts: the
// version stays at level 1.
func TestClusterVersionCountsFencedMembers(t *testing.T) {
	var mu sync.Mutex
	asked := map[string]bool{}
	rt := nodeLevels(func(host string) bool {
		mu.Lock()
		asked[host] = true
		mu.Unlock()
		return host == "127.0.0.3:8006" // pmg3 runs release 0.1.0: no level
	})
	me := testMember(1, fsm.Voter)
	d := leaderDaemon(t, rt, me, testMember(2, fsm.Voter), testMember(3, fsm.Voter))
	d.node.Store(&nodeFile{Name: me.Name, IP: me.IP, Port: me.Port, CID: me.CID, Joined: true})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// A forced promotion on pmg1 kept pmg2 and fenced pmg3.
	epoch := d.fsm.Cluster().Epoch + 1
	var members []fsm.Member
	for _, m := range d.fsm.Members() {
		if m.CID != 3 {
			m.Epoch = epoch
		}
		members = append(members, m)
	}
	if _, err := d.writes.applyLocal(ctx, &fsm.SetEpoch{Epoch: epoch, Members: members}); err != nil {
		t.Fatal(err)
	}
	if m, _ := d.fsm.Member(3); !m.Fenced(epoch) {
		t.Fatal("test setup: pmg3 is not fenced")
	}

	if err := newVersionKeeper(d).record(ctx); err != nil {
		t.Fatalf("record: %v", err)
	}
	if v := d.fsm.ClusterVersion(); v != version.LevelRelease010 {
		t.Errorf("cluster version %d with a fenced release 0.1.0 member, want %d", v, version.LevelRelease010)
	}
	mu.Lock()
	defer mu.Unlock()
	if !asked["127.0.0.3:8006"] {
		t.Errorf("the fenced member was not asked for its level (asked %v)", asked)
	}
}

// nodeLevels answers every member's node request (api.Node) with this build's version and
// level, or with none (release 0.1.0) for the hosts ("ip:port") old says.
func nodeLevels(old func(host string) bool) roundTrip {
	return func(r *http.Request) (*http.Response, error) {
		n := api.Node{Name: r.URL.Host}
		if !old(r.URL.Host) {
			n.Version, n.Level = version.Version, version.Level
		}
		b, _ := json.Marshal(n)
		return &http.Response{StatusCode: http.StatusOK, Header: http.Header{}, Request: r,
			Body: io.NopCloser(strings.NewReader(string(b)))}, nil
	}
}
