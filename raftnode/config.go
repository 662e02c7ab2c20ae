package raftnode

import (
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// Config holds the settings of a Node. Build it from DefaultConfig; New validates it.
type Config struct {
	// Dir holds raft.db and the snapshots directory.
	Dir string
	// LocalID is this node's Raft server ID: its CID as a decimal string.
	LocalID raft.ServerID
	// Address is the cluster address ("ip:port") other nodes reach this one at.
	Address raft.ServerAddress
	// Bootstrap makes a node with no Raft state the single voter of a new configuration
	// (a standalone node). A joining node leaves it false and waits to be added.
	Bootstrap bool

	// HeartbeatTimeout, ElectionTimeout and LeaderLeaseTimeout are Raft's timers.
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	// CommitTimeout bounds how long the leader waits before sending an empty heartbeat.
	CommitTimeout time.Duration
	// SnapshotInterval and SnapshotThreshold decide when a snapshot is taken;
	// TrailingLogs is how many log entries stay behind a snapshot.
	SnapshotInterval  time.Duration
	SnapshotThreshold uint64
	TrailingLogs      uint64
	// SnapshotRetain is how many snapshots are kept on disk.
	SnapshotRetain int
	// MaxAppendEntries bounds how many entries one AppendEntries RPC (and one disk
	// write on the leader) carries: concurrent writes share it (group commit).
	MaxAppendEntries int
	// OpenTimeout bounds the wait for the raft.db file lock.
	OpenTimeout time.Duration
	// DialTimeout bounds each new connection to a peer (its TCP, TLS and channel
	// handshakes), apart from the 5 s bound on each RPC: a hung peer (SIGSTOP) accepts
	// TCP but never completes TLS, and raft's Shutdown waits for every vote RPC in flight.
	DialTimeout time.Duration

	// Logger receives Raft's logs; nil means no logs.
	Logger hclog.Logger
}

// DefaultConfig returns settings that fail over in about half a second on a LAN (a
// follower notices a silent master after one to two heartbeat timeouts) and stay stable
// on a loaded 2-core machine.
//
// The leader lease equals the heartbeat timeout. The lease is how long the master goes on
// without a quorum's answers before it steps down; it guards nothing here (reads confirm
// leadership with a quorum round trip, VerifyLeader), and failover speed is the
// followers' heartbeat timeout, not the lease. A lease shorter than the followers'
// timeout made the master abdicate while its followers still followed it: on a link
// with 20 ms ± 10 ms delay one lost heartbeat costs a TCP retransmission timeout (about
// RTT + 4 x RTT variance, over 100 ms), so each follower often looked silent for 100 ms,
// both at once often enough for 16 leader changes in 30 s with 10% loss (issue 14);
// with the lease at the heartbeat timeout, 0 to 1.
func DefaultConfig() Config {
	return Config{
		HeartbeatTimeout:   200 * time.Millisecond,
		ElectionTimeout:    200 * time.Millisecond,
		LeaderLeaseTimeout: 200 * time.Millisecond,
		CommitTimeout:      20 * time.Millisecond,
		SnapshotInterval:   30 * time.Second,
		SnapshotThreshold:  8192,
		TrailingLogs:       10240,
		SnapshotRetain:     2,
		MaxAppendEntries:   256,
		OpenTimeout:        2 * time.Second,
		DialTimeout:        2 * time.Second,
	}
}

// Validate reports the first setting that cannot work.
func (c Config) Validate() error {
	switch {
	case c.Dir == "":
		return errors.New("raftnode: Dir is required")
	case c.LocalID == "":
		return errors.New("raftnode: LocalID is required")
	case c.Address == "":
		return errors.New("raftnode: Address is required")
	case c.DialTimeout <= 0:
		return errors.New("raftnode: DialTimeout must be positive")
	case c.OpenTimeout <= 0:
		return errors.New("raftnode: OpenTimeout must be positive (0 would wait forever for the file lock)")
	case c.SnapshotRetain < 1:
		return errors.New("raftnode: SnapshotRetain must be at least 1")
	}
	rc := c.raftConfig()
	if err := raft.ValidateConfig(rc); err != nil {
		return fmt.Errorf("raftnode: %w", err)
	}
	return nil
}

func (c Config) raftConfig() *raft.Config {
	rc := raft.DefaultConfig()
	rc.LocalID = c.LocalID
	rc.HeartbeatTimeout = c.HeartbeatTimeout
	rc.ElectionTimeout = c.ElectionTimeout
	rc.LeaderLeaseTimeout = c.LeaderLeaseTimeout
	rc.CommitTimeout = c.CommitTimeout
	rc.SnapshotInterval = c.SnapshotInterval
	rc.SnapshotThreshold = c.SnapshotThreshold
	rc.TrailingLogs = c.TrailingLogs
	rc.MaxAppendEntries = c.MaxAppendEntries
	rc.ShutdownOnRemove = false
	rc.Logger = c.Logger
	if rc.Logger == nil {
		rc.Logger = hclog.NewNullLogger()
	}
	return rc
}

// singleVoter is the Raft configuration with this node as its only voter: what a
// standalone node bootstraps and what a forced recovery writes.
func (c Config) singleVoter() raft.Configuration {
	return raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: c.LocalID, Address: c.Address}}}
}
