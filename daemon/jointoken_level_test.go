package daemon

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/cluster"
	"github.com/pmgcm/pmgcm/fsm"
	"github.com/pmgcm/pmgcm/internal/version"
)

// TestJoinCmdTTLNeedsEveryMemberToEnforce: a master of release 0.1.0 admits with a token
// without looking at its expiry, so join-cmd --ttl is refused while a member runs it,
// naming the member and what to do instead, and nothing is rotated; a token that does
// not expire is still made. With every member of a later build it works before the
// cluster version is recorded (the members are asked), and once it is, nobody is asked.
func TestJoinCmdTTLNeedsEveryMemberToEnforce(t *testing.T) {
	var mu sync.Mutex
	oldHost := "127.0.0.3:8006"
	asked := 0
	rt := nodeLevels(func(host string) bool {
		mu.Lock()
		defer mu.Unlock()
		asked++
		return host == oldHost
	})
	d := joinCmdDaemon(t, rt, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	salt := d.fsm.Cluster().JoinTokenSalt
	_, err := d.creator.joinCmd(ctx, false, 30*time.Minute)
	if !errors.Is(err, ErrIncompatible) {
		t.Fatalf("--ttl with a release 0.1.0 member: %v, want ErrIncompatible", err)
	}
	for _, want := range []string{"cid 3 (pmg3)", "release 0.1.0", "--rotate, without --ttl"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the refusal %q does not say %q", err, want)
		}
	}
	if got := d.fsm.Cluster().JoinTokenSalt; string(got) != string(salt) {
		t.Error("the refused --ttl rotated the token")
	}
	res, err := d.creator.joinCmd(ctx, true, 0)
	if err != nil || res.Expires != nil {
		t.Fatalf("--rotate without --ttl in the mixed cluster: %+v, %v", res, err)
	}

	// pmg3 is upgraded; the cluster version is not recorded yet.
	mu.Lock()
	oldHost, asked = "", 0
	mu.Unlock()
	if v := d.fsm.ClusterVersion(); v >= version.LevelClusterVersion {
		t.Fatalf("test setup: cluster version %d already recorded", v)
	}
	res, err = d.creator.joinCmd(ctx, false, 30*time.Minute)
	if err != nil || res.Expires == nil {
		t.Fatalf("--ttl with every member upgraded: %+v, %v", res, err)
	}
	mu.Lock()
	if asked != 2 {
		t.Errorf("%d members asked for their level, want the 2 others", asked)
	}
	mu.Unlock()

	if err := d.versions.record(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	asked = 0
	mu.Unlock()
	if _, err := d.creator.joinCmd(ctx, false, time.Hour); err != nil {
		t.Fatalf("--ttl at cluster version %d: %v", d.fsm.ClusterVersion(), err)
	}
	mu.Lock()
	defer mu.Unlock()
	if asked != 0 {
		t.Errorf("at the recorded cluster version %d members were asked, want none", asked)
	}
}

// TestJoinCmdTTLMemberUnreachable: a member that does not say its level refuses --ttl
// (the expiry might not be enforced), with the way forward; no token is rotated.
func TestJoinCmdTTLMemberUnreachable(t *testing.T) {
	rt := roundTrip(func(*http.Request) (*http.Response, error) { return nil, errors.New("connection refused") })
	d := joinCmdDaemon(t, rt, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	salt := d.fsm.Cluster().JoinTokenSalt
	_, err := d.creator.joinCmd(ctx, false, 30*time.Minute)
	if !errors.Is(err, ErrMemberUnreachable) || !strings.Contains(err.Error(), "cid 2 (pmg2) did not say its version") ||
		!strings.Contains(err.Error(), "try again once every member is up") {
		t.Fatalf("--ttl with a member down: %v", err)
	}
	if got := d.fsm.Cluster().JoinTokenSalt; string(got) != string(salt) {
		t.Error("the refused --ttl rotated the token")
	}
}

// joinCmdDaemon is a leaderDaemon of n voters (this node cid 1) with what join-cmd needs:
// the version and token keepers, a forwarder (the master's rotation runs locally) and the
// creator.
func joinCmdDaemon(t *testing.T, rt http.RoundTripper, n int) *Daemon {
	t.Helper()
	members := make([]fsm.Member, n)
	for i := range members {
		members[i] = testMember(uint64(i+1), fsm.Voter)
	}
	me := members[0]
	d := leaderDaemon(t, rt, members...)
	d.node.Store(&nodeFile{Name: me.Name, IP: me.IP, Port: me.Port, CID: me.CID, Joined: true})
	d.versions = newVersionKeeper(d)
	d.fwd = cluster.NewForwarder(cluster.ForwarderConfig{Self: d.cfg.Addr(), Raft: leadership{d}, Client: d.peer,
		HeartbeatTimeout: d.cfg.Raft.HeartbeatTimeout, ElectionWait: electionWait(d.cfg.Raft)})
	d.tokens = newTokenKeeper(d)
	d.creator = newCreator(d)
	return d
}
