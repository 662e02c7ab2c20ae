package daemon

import (
	"encoding/json"
	"errors"
	"maps"
	"os"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"

	"github.com/pmgcm/pmgcm/fsm"
)

// intakeKeys are the configuration entries that mail intake and retention read. They are
// kept in mail-policy.json too: after a restart the state machine is rebuilt only as Raft
// replays the log (for a follower: once a master is heard from), and until then SMTP must
// not answer with an empty policy.
var intakeKeys = []string{keyRelayDomains, keyMaxSize, keyRetentionDays}

// intakeCache is mail-policy.json.
type intakeCache struct {
	Index  uint64            `json:"index"`
	Values map[string]string `json:"values"`
}

// intakePolicy owns the mail intake policy as SMTP intake and retention read it: from
// the state machine once it has caught up, from its cache (mail-policy.json) before.
type intakePolicy struct {
	fsm    *fsm.FSM
	logger hclog.Logger
	// path is mail-policy.json.
	path  string
	cache atomic.Pointer[intakeCache]
	// unreadable is set while the state machine fails to read a setting back (a failing
	// disk under its spill file), so that the failure is logged once, not per message.
	unreadable atomic.Bool
}

// get reads setting key from the state machine, logging when reads start and stop
// failing. why says what the caller does instead.
func (p *intakePolicy) get(key, why string) (fsm.Entry, bool, error) {
	e, ok, err := p.fsm.Get(key)
	switch {
	case err != nil && !p.unreadable.Swap(true):
		p.logger.Warn("cannot read a mail intake setting: "+why, "key", key, "error", err)
	case err == nil && p.unreadable.Swap(false):
		p.logger.Info("mail intake settings read again", "key", key)
	}
	return e, ok, err
}

// newIntakePolicy returns the intake policy of d, whose fsm and data directory are made.
func newIntakePolicy(d *Daemon) *intakePolicy {
	return &intakePolicy{fsm: d.fsm, logger: d.logger, path: d.dir.file("mail-policy.json")}
}

// load reads mail-policy.json, if any; a damaged one is ignored (it is only a
// cache of replicated state).
func (p *intakePolicy) load() {
	c := &intakeCache{Values: map[string]string{}}
	if b, err := readFileBounded(p.path, maxPeersFileBytes); err == nil {
		if err := json.Unmarshal(b, c); err != nil || c.Values == nil {
			p.logger.Warn("ignoring a damaged mail policy cache", "file", p.path, "error", err)
			c = &intakeCache{Values: map[string]string{}}
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		p.logger.Warn("cannot read the mail policy cache", "file", p.path, "error", err)
	}
	p.cache.Store(c)
}

// setting returns a setting of mail intake: from the state machine once it has
// caught up with the cache, from the cache before.
func (p *intakePolicy) setting(key string) (string, bool) {
	c := p.cache.Load()
	if c == nil || p.fsm.AppliedIndex() >= c.Index {
		// On a failed read, the last values cached (mail-policy.json): a disk that fails
		// a read of the spill file must not turn the relay domains off.
		e, ok, err := p.get(key, "using its last cached value (its default if none)")
		if err == nil {
			return string(e.Value), ok
		}
		if c == nil {
			return "", false
		}
	}
	v, ok := c.Values[key]
	return v, ok
}

// refresh stores the intake settings if they changed.
func (p *intakePolicy) refresh() {
	cur := p.cache.Load()
	if cur != nil && p.fsm.AppliedIndex() < cur.Index {
		return
	}
	next := &intakeCache{Index: p.fsm.AppliedIndex(), Values: map[string]string{}}
	for _, k := range intakeKeys {
		e, ok, err := p.get(k, "the cache keeps the last values")
		if err != nil {
			return
		}
		if ok {
			next.Values[k] = string(e.Value)
		}
	}
	if cur != nil && maps.Equal(cur.Values, next.Values) {
		return
	}
	b, err := json.Marshal(next)
	if err == nil {
		err = writeFileAtomic(p.path, b, 0o600)
	}
	if err != nil {
		p.logger.Error("cannot save the mail policy cache", "error", err)
		return
	}
	p.cache.Store(next)
}
