package fsm

import "fmt"

// Feature levels of the commands of the state machine (package internal/version names
// the releases that speak them and says what a build reports).
const (
	// LevelRelease010 is release 0.1.0 (commit 1ca55cd): a cluster that recorded no
	// version is at this level.
	LevelRelease010 = 1
	// LevelClusterVersion adds SetClusterVersion, and halting at an unknown entry.
	LevelClusterVersion = 2
	// MaxLevel is the highest level whose commands this state machine applies.
	MaxLevel = LevelClusterVersion
)

// SetClusterVersion records the cluster version: the lowest feature level among the
// members (levels: see LevelRelease010 and package internal/version). It is itself of
// level 2: a master proposes it only once every member reports level 2 or more,
// because a release 0.1.0 node refuses an unknown command and goes on applying the
// entries after it. The version never goes
// down; a build whose own level is below Version stops applying (ErrHalted).
type SetClusterVersion struct {
	Version int `json:"version"`
}

// Type returns TypeSetClusterVersion.
func (SetClusterVersion) Type() CommandType { return TypeSetClusterVersion }

func (s *state) setClusterVersion(c SetClusterVersion) error {
	if s.cluster == nil {
		return fmt.Errorf("%w: SetClusterVersion", ErrNoCluster)
	}
	if c.Version > MaxLevel {
		// Deterministic across builds of one level; a newer build applies it.
		return fmt.Errorf("%w: the cluster version is now level %d, this build applies up to level %d: upgrade pmgclusterd on this node",
			ErrUnknownCommand, c.Version, MaxLevel)
	}
	if cur := s.cluster.EffectiveVersion(); c.Version < cur {
		return fmt.Errorf("%w: SetClusterVersion %d: the cluster version is %d and never goes down",
			ErrBadCommand, c.Version, cur)
	}
	s.cluster.Version = c.Version
	return nil
}

// ClusterVersion returns the cluster version: the recorded one, or level 1 (release
// 0.1.0) when none was recorded or there is no cluster.
func (f *FSM) ClusterVersion() int {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.cluster.EffectiveVersion()
}

// halt stops the FSM at the entry idx it cannot apply; f.mu is held and is released.
func (f *FSM) halt(idx uint64, res *Result) *Result {
	f.halted = fmt.Errorf("%w at log entry %d (this node applied up to %d): %w",
		ErrHalted, idx, f.applied, res.Err)
	res.Err = f.halted
	hook := f.onHalt
	f.mu.Unlock()
	if hook != nil {
		hook(res.Err)
	}
	return res
}

// Halted returns nil, or the error (wrapping ErrHalted) of the entry at which the FSM
// stopped applying.
func (f *FSM) Halted() error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.halted
}

// SetOnHalt sets a hook called once when the FSM halts, with the error, outside the
// FSM's lock, on Raft's FSM goroutine: it must not block. Set it before Raft starts.
func (f *FSM) SetOnHalt(fn func(err error)) {
	f.mu.Lock()
	f.onHalt = fn
	f.mu.Unlock()
}
