// Package version owns what a build says about itself: its version string (set at build
// time from git) and the feature levels it speaks. It imports nothing of this module, so
// that every package may use it.
//
// A feature level numbers what the members of a cluster must all understand: the
// commands of the replicated log, the fields of its snapshots, the node-to-node wire
// formats. Every release that adds such a thing raises Level by one. A cluster runs at
// its cluster version, the lowest Level among its members, which the master records in
// the Raft log once every member reports it; a feature of a higher level is used only
// once the cluster version has reached it.
package version

import (
	"fmt"

	"github.com/pmgcm/pmgcm/fsm"
)

// Version is this build's version, e.g. "v0.2.0" or "1ca55cd-dirty". The Makefile sets
// it from `git describe --tags --always --dirty`:
//
//	go build -ldflags "-X github.com/pmgcm/pmgcm/internal/version.Version=$(VERSION)"
//
// A build without it (plain go build) says Fallback.
var Version = Fallback

// Fallback is the version of a build that was not given one.
const Fallback = "0.2.0-dev"

// The feature levels.
const (
	// LevelRelease010 is release 0.1.0 (commit 1ca55cd), the first release. Its nodes
	// report no version or level; a member that reports none is at this level.
	LevelRelease010 = fsm.LevelRelease010
	// LevelClusterVersion adds the cluster version: nodes report their version and
	// level, the log carries the SetClusterVersion command, and a node stops applying
	// at an entry it does not know instead of skipping it. Its wire features: batched
	// forwarded writes (cluster/batch.go) and several mail bodies to a request
	// (mailrepl.PathBodies).
	LevelClusterVersion = fsm.LevelClusterVersion
)

// Level is the feature level of this build: the highest cluster version it can run at.
const Level = LevelClusterVersion

// MinLevel is the lowest cluster version this build runs in: it joins, and is
// upgraded in place from, a cluster of any level from MinLevel to Level.
const MinLevel = LevelRelease010

// Releases names the release that introduced each feature level.
var Releases = map[int]string{
	LevelRelease010:     "0.1.0",
	LevelClusterVersion: "0.2.0",
}

// LevelName returns "level N (release R)" for messages.
func LevelName(level int) string {
	if r, ok := Releases[level]; ok {
		return fmt.Sprintf("level %d (release %s)", level, r)
	}
	return fmt.Sprintf("level %d", level)
}

// String is the one-line description of this build that --version prints after the
// program's name.
func String() string {
	return fmt.Sprintf("%s (feature level %d; joins and upgrades clusters at levels %d to %d)",
		Version, Level, MinLevel, Level)
}
