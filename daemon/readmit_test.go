package daemon

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/cluster"
	"github.com/pmgcm/pmgcm/fsm"
	"github.com/pmgcm/pmgcm/internal/version"
)

// fencedCluster is a state machine with pmg1 (cid 1) in epoch 2 and pmg2 (cid 2, whose
// certificate is "AA:BB:02") fenced in epoch 1, at cluster version cv.
func fencedCluster(t *testing.T, cv int) *fsm.FSM {
	t.Helper()
	f := fsm.New()
	one, two := testMember(1, fsm.Voter), testMember(2, fsm.Voter)
	applyTo(t, f, 1, fsm.CreateCluster{ClusterID: "c", CreatedAt: time.Now(), Founder: one})
	applyTo(t, f, 2, fsm.AddMember{Member: two})
	idx := uint64(3)
	if cv > version.LevelRelease010 {
		applyTo(t, f, idx, fsm.SetClusterVersion{Version: cv})
		idx++
	}
	epoch := f.Cluster().Epoch + 1
	one.Epoch = epoch
	applyTo(t, f, idx, fsm.SetEpoch{Epoch: epoch, Members: []fsm.Member{one, two}})
	if m, _ := f.Member(2); !m.Fenced(epoch) {
		t.Fatal("test setup: pmg2 is not fenced")
	}
	return f
}

// TestCheckReadmitLevel: at cluster version 1 every build is re-admitted (a release
// 0.1.0 node sends no level); once the version is recorded higher, an older fenced node
// is refused with both versions named, as at a join.
func TestCheckReadmitLevel(t *testing.T) {
	m := testMember(2, fsm.Voter)
	old := cluster.ReadmitRequest{Fingerprint: m.Fingerprint}
	cur := cluster.ReadmitRequest{Fingerprint: m.Fingerprint, Version: version.Version, Level: version.Level}
	if err := checkReadmitLevel(fencedCluster(t, version.LevelRelease010), m, old); err != nil {
		t.Fatalf("release 0.1.0 node refused by a cluster at level 1: %v", err)
	}
	f := fencedCluster(t, version.LevelClusterVersion)
	err := checkReadmitLevel(f, m, old)
	if !errors.Is(err, ErrIncompatible) || !strings.Contains(err.Error(), version.LevelName(version.LevelClusterVersion)) ||
		!strings.Contains(err.Error(), oldNodeVersion) || !strings.Contains(err.Error(), "pmgcm sync") {
		t.Fatalf("release 0.1.0 node at cluster version 2: %v", err)
	}
	if err := checkReadmitLevel(f, m, cur); err != nil {
		t.Fatalf("a node of this build refused: %v", err)
	}
}

// TestReadmitHereRefusesOldBuild: the master's re-admission applies the level check
// before it changes anything: the fenced member stays fenced.
func TestReadmitHereRefusesOldBuild(t *testing.T) {
	f := fencedCluster(t, version.LevelClusterVersion)
	s := &syncer{fsm: f, turn: &memberTurn{}} // a refusal needs no host, no Raft
	m, _ := f.Member(2)
	_, err := s.readmitHere(context.Background(), cluster.ReadmitRequest{Fingerprint: m.Fingerprint})
	if !errors.Is(err, ErrIncompatible) {
		t.Fatalf("re-admission of a release 0.1.0 node at cluster version 2: %v", err)
	}
	if m, _ := f.Member(2); !m.Fenced(f.Cluster().Epoch) {
		t.Fatal("the refused node was re-admitted")
	}
}
