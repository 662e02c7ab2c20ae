package daemon

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/fsm"
	"github.com/pmgcm/pmgcm/internal/version"
)

// TestBulkBodiesWaitForClusterVersion: the replicator asks for several bodies to a
// request only once the cluster version says every member serves them (rule 7): not
// while a member runs release 0.1.0, which answers 404 for the path, and from the moment
// the master records level 2.
func TestBulkBodiesWaitForClusterVersion(t *testing.T) {
	var oldGone atomic.Bool
	rt := nodeLevels(func(host string) bool { // pmg3 runs release 0.1.0 until upgraded
		return host == "127.0.0.3:8006" && !oldGone.Load()
	})
	me := testMember(1, fsm.Voter)
	d := leaderDaemon(t, rt, me, testMember(2, fsm.Voter), testMember(3, fsm.Voter))
	ms := &mailSystem{host: d}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	keeper := newVersionKeeper(d)
	if err := keeper.record(ctx); err != nil {
		t.Fatalf("record: %v", err)
	}
	if ms.bulkBodies() {
		t.Fatalf("bulk bodies at cluster version %d, with a release 0.1.0 member", d.fsm.ClusterVersion())
	}
	oldGone.Store(true)
	if err := keeper.record(ctx); err != nil {
		t.Fatalf("record: %v", err)
	}
	if !ms.bulkBodies() {
		t.Fatalf("no bulk bodies at cluster version %d, every member at level %d", d.fsm.ClusterVersion(), version.Level)
	}
}
