package daemon

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/cluster"
	"github.com/pmgcm/pmgcm/fsm"
	"github.com/pmgcm/pmgcm/internal/version"
)

// The cluster version (see package internal/version): every node reports its build's
// version and feature level in its node info (rpcNode, the status row); the master
// records the lowest level among the members in the Raft log (fsm.SetClusterVersion)
// once every member reports one, which a release 0.1.0 node does not; and a node whose
// level is below the recorded one is refused at join.

// oldNodeVersion stands for the version of a node that answers without one: release
// 0.1.0, the last that reported none.
const oldNodeVersion = "<=0.1.0"

// clusterVersionInterval is how often the master asks the members for their levels
// while the cluster version is below its own level.
const clusterVersionInterval = 5 * time.Second

// versionKeeper owns the cluster version: it reports the versions in status, refuses a
// joining node older than the cluster version, logs a halted state machine, and runs
// the master's leader duty that raises the recorded cluster version.
type versionKeeper struct {
	fsm    *fsm.FSM
	logger hclog.Logger
	// self is this node's identity file (its CID).
	self func() nodeFile
	// peer is the cluster RPC client (made after the keeper, by openRPC).
	peer       func() *cluster.Client
	rpcTimeout time.Duration
	// turn serializes membership changes on the master (Daemon.memberTurn).
	turn *memberTurn
	// apply commits a command on this node, the master (Daemon.applyLocal).
	apply func(context.Context, fsm.Command) (*fsm.Result, error)
	// onHalt is told when the state machine halts (it wakes the master's handover duty);
	// it must not block.
	onHalt func()
}

// newVersionKeeper returns the version keeper of d, whose fsm is made.
func newVersionKeeper(d *Daemon) *versionKeeper {
	return &versionKeeper{
		fsm: d.fsm, logger: d.logger, self: d.self, peer: func() *cluster.Client { return d.peer },
		rpcTimeout: d.cfg.RPCTimeout, turn: &d.memberTurn, apply: d.writes.applyLocal,
		onHalt: d.tools.halt.fire,
	}
}

// setBuildVersion fills this node's own row with its build's version and level.
func setBuildVersion(n *api.Node) {
	n.Version, n.Level = version.Version, version.Level
}

// nodeLevel is the feature level a node's info says, level 1 when it says none.
func nodeLevel(n api.Node) int {
	if n.Level == 0 {
		return version.LevelRelease010
	}
	return n.Level
}

// status completes the status with the cluster version and each answering node's
// version (oldNodeVersion for one that reports none), and warns of a mixed cluster and of
// a state machine that stopped applying.
func (k *versionKeeper) status(st *api.Status) {
	if st.Cluster == nil {
		return
	}
	cv := k.fsm.ClusterVersion()
	st.Cluster.Version = cv
	levels := map[int]bool{}
	for i := range st.Nodes {
		r := &st.Nodes[i]
		if r.State == api.StateDown {
			continue
		}
		if r.Version == "" {
			r.Version, r.Level = oldNodeVersion, version.LevelRelease010
		}
		levels[r.Level] = true
	}
	if len(levels) > 1 {
		st.Cluster.Warnings = append(st.Cluster.Warnings, fmt.Sprintf(
			"the members run builds of different feature levels: the cluster runs at %s until every member is upgraded",
			version.LevelName(cv)))
	}
	if err := k.fsm.Halted(); err != nil {
		st.Cluster.Warnings = append(st.Cluster.Warnings, "this node "+haltAdvice(err))
	}
}

// haltAdvice says what a halted state machine means and what to do.
func haltAdvice(err error) string {
	return fmt.Sprintf("(%s) stopped applying the replicated log: %v; it serves stale data and is no use as a master until pmgclusterd on it is upgraded (it then applies the rest on start)",
		version.Version, err)
}

// watchHalt logs, loudly, when the state machine meets an entry it cannot apply, and
// wakes the master's handover duty: a halted node is no use as a master.
func (k *versionKeeper) watchHalt() {
	k.fsm.SetOnHalt(func(err error) {
		k.logger.Error("REPLICATED LOG HALTED: this node "+haltAdvice(err), "version", version.Version,
			"level", version.Level)
		if k.onHalt != nil {
			k.onHalt()
		}
	})
}

// checkJoinLevel refuses a joining node whose build is below the cluster version. The
// caller has the membership turn (memberTurn), which record takes to raise the version.
func (k *versionKeeper) checkJoinLevel(req cluster.AdmitRequest) error {
	level, v := req.Level, req.Version
	if level == 0 {
		level, v = version.LevelRelease010, oldNodeVersion
	}
	if cv := k.fsm.ClusterVersion(); level < cv {
		return fmt.Errorf("%w: the cluster runs at cluster version %s, the joining node %s (%s, %s) is older: upgrade pmgclusterd on it to this cluster's release or newer (this node runs %s)",
			ErrIncompatible, version.LevelName(cv), req.Name, v, version.LevelName(level), version.Version)
	}
	// A token that expires was made once every member enforced expiry, maybe before the
	// cluster version said so (levelEnforcesExpiry): an older node would, as master,
	// admit with it after it expired.
	if cl := k.fsm.Cluster(); cl != nil && level < levelEnforcesExpiry {
		if _, expires := tokenExpiry(cl.JoinTokenSalt); expires {
			return fmt.Errorf("%w: the joining node %s (%s, %s) would not enforce the join token's expiry as master: "+
				"upgrade pmgclusterd on it to release %s or newer, or %s and join with that (this node runs %s)",
				ErrIncompatible, req.Name, v, version.LevelName(level), version.Releases[levelEnforcesExpiry], noExpiryAdvice, version.Version)
		}
	}
	return nil
}

// checkReadmitLevel refuses the re-admission of fenced member m whose build (req; none
// is release 0.1.0, level 1) is below the cluster version, naming both, as
// checkJoinLevel does for a join. The caller has the membership turn.
func checkReadmitLevel(f *fsm.FSM, m fsm.Member, req cluster.ReadmitRequest) error {
	level, v := req.Level, req.Version
	if level == 0 {
		level, v = version.LevelRelease010, oldNodeVersion
	}
	if cv := f.ClusterVersion(); level < cv {
		return fmt.Errorf("%w: the cluster runs at cluster version %s, the fenced node %s (cid %d, %s, %s) is older: upgrade pmgclusterd on it to this cluster's release or newer, then run pmgcm sync --master_ip again (this node runs %s)",
			ErrIncompatible, version.LevelName(cv), m.Name, m.CID, v, version.LevelName(level), version.Version)
	}
	return nil
}

// duty is the master's leader duty (registered with raftnode.Node.OnLeader) that
// raises the recorded cluster version to the lowest level among the members, once all
// of them report one above it. For as long as the term lasts it asks the members every
// clusterVersionInterval, and stops asking once the cluster is at this build's level.
func (k *versionKeeper) duty(ctx context.Context) {
	tick := time.NewTicker(clusterVersionInterval)
	defer tick.Stop()
	for {
		if k.fsm.Cluster() != nil && k.fsm.Halted() == nil && k.fsm.ClusterVersion() < version.Level {
			if err := k.record(ctx); err != nil && ctx.Err() == nil {
				k.logger.Warn("cannot record the cluster version", "error", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// record asks every member for its level and, if the lowest is above the
// recorded cluster version, proposes it. A member that does not answer, or answers
// without a level (release 0.1.0, which would skip the command), keeps the version.
//
// Every member counts, a fenced one too: a version raised past its level would keep it
// out for good (re-admission refuses a build below the cluster version,
// checkReadmitLevel), and a master of release 0.1.0 re-admits without asking the build. A fenced member refuses the RPC, so the version waits
// until it is re-admitted or deleted.
func (k *versionKeeper) record(ctx context.Context) error {
	members := k.fsm.Members()
	lowest, who, err := k.lowestLevel(ctx, members)
	if err != nil {
		return err
	}
	cur := k.fsm.ClusterVersion()
	if lowest <= cur {
		if lowest < version.Level {
			k.logger.Debug("cluster version stays: a member runs an older build", "cluster-version", cur,
				"member", who, "level", lowest)
		}
		return nil
	}
	// The turn: no member is admitted between the check and the record (checkJoinLevel).
	release, err := k.turn.take(ctx)
	if err != nil {
		return err
	}
	defer release()
	if !sameMembers(members, k.fsm.Members()) {
		return nil // the members changed meanwhile; the next round asks again
	}
	if _, err := k.apply(ctx, fsm.SetClusterVersion{Version: lowest}); err != nil {
		return err
	}
	k.logger.Info("cluster version recorded", "cluster-version", lowest, "was", cur, "members", len(members))
	return nil
}

// lowestLevel returns the lowest feature level among members (this node's own is its
// build's) and a member at it, or an error naming a member that did not answer.
func (k *versionKeeper) lowestLevel(ctx context.Context, members []fsm.Member) (int, string, error) {
	me := k.self().CID
	type answer struct {
		m     fsm.Member
		level int
		err   error
	}
	answers := make([]answer, len(members))
	var wg sync.WaitGroup
	for i, m := range members {
		answers[i].m = m
		if m.CID == me {
			answers[i].level = version.Level
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, min(k.rpcTimeout, statusTimeout))
			defer cancel()
			n, err := k.peer().Node(cctx, memberAddr(m))
			if err != nil {
				answers[i].err = err
				return
			}
			answers[i].level = nodeLevel(n)
		}()
	}
	wg.Wait()
	lowest, who := version.Level, "this node"
	for _, a := range answers {
		name := fmt.Sprintf("cid %d (%s)", a.m.CID, a.m.Name)
		if a.err != nil {
			return 0, "", fmt.Errorf("%s did not say its version: %w", name, a.err)
		}
		if a.level < lowest {
			lowest, who = a.level, name
		}
	}
	return lowest, who, nil
}

// sameMembers says whether a and b hold the same CIDs.
func sameMembers(a, b []fsm.Member) bool {
	cids := func(ms []fsm.Member) []uint64 {
		out := make([]uint64, 0, len(ms))
		for _, m := range ms {
			out = append(out, m.CID)
		}
		sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
		return out
	}
	return slices.Equal(cids(a), cids(b))
}
