package daemon

import (
	"encoding/json"
	"errors"
	"maps"
	"os"
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

func (d *Daemon) intakePath() string { return d.dir.file("mail-policy.json") }

// loadIntake reads mail-policy.json, if any; a damaged one is ignored (it is only a
// cache of replicated state).
func (d *Daemon) loadIntake() {
	c := &intakeCache{Values: map[string]string{}}
	if b, err := readFileBounded(d.intakePath(), maxPeersFileBytes); err == nil {
		if err := json.Unmarshal(b, c); err != nil || c.Values == nil {
			d.logger.Warn("ignoring a damaged mail policy cache", "file", d.intakePath(), "error", err)
			c = &intakeCache{Values: map[string]string{}}
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		d.logger.Warn("cannot read the mail policy cache", "file", d.intakePath(), "error", err)
	}
	d.intake.Store(c)
}

// intakeSetting returns a setting of mail intake: from the state machine once it has
// caught up with the cache, from the cache before.
func (d *Daemon) intakeSetting(key string) (string, bool) {
	c := d.intake.Load()
	if c == nil || d.fsm.AppliedIndex() >= c.Index {
		e, ok := d.fsm.Get(key)
		return string(e.Value), ok
	}
	v, ok := c.Values[key]
	return v, ok
}

// refreshIntake stores the intake settings if they changed.
func (d *Daemon) refreshIntake() {
	cur := d.intake.Load()
	if cur != nil && d.fsm.AppliedIndex() < cur.Index {
		return
	}
	next := &intakeCache{Index: d.fsm.AppliedIndex(), Values: map[string]string{}}
	for _, k := range intakeKeys {
		if e, ok := d.fsm.Get(k); ok {
			next.Values[k] = string(e.Value)
		}
	}
	if cur != nil && maps.Equal(cur.Values, next.Values) {
		return
	}
	b, err := json.Marshal(next)
	if err == nil {
		err = writeFileAtomic(d.intakePath(), b, 0o600)
	}
	if err != nil {
		d.logger.Error("cannot save the mail policy cache", "error", err)
		return
	}
	d.intake.Store(next)
}
