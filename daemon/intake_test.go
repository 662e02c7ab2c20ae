package daemon

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/pmgcm/pmgcm/fsm"
)

// TestIntakeSettingFallsBackToCache: a mail intake setting whose value the state machine
// cannot read back from its spill file (a failing disk; here the file is gone with the
// FSM closed) is taken from the cache, not dropped: an empty relay_domains would refuse
// every recipient. The failure is logged once, not per message.
func TestIntakeSettingFallsBackToCache(t *testing.T) {
	f := fsm.New()
	if err := f.SpillTo(t.TempDir(), nil); err != nil {
		t.Fatal(err)
	}
	domains := strings.Repeat("example.org,", 10) + "example.net" // over the spill threshold
	applyAll(t, f, fsm.ConfigSet{Key: keyRelayDomains, Value: []byte(domains)})
	var logs strings.Builder
	p := &intakePolicy{fsm: f, logger: hclog.New(&hclog.LoggerOptions{Output: &logs}), path: filepath.Join(t.TempDir(), "mail-policy.json")}
	p.refresh()
	if v, ok := p.setting(keyRelayDomains); !ok || v != domains {
		t.Fatalf("setting = %q, %v before the failure", v, ok)
	}
	f.Close()
	if _, _, err := f.Get(keyRelayDomains); err == nil {
		t.Fatal("the value still reads: the test does not make the failure it is about")
	}
	for range 100 { // a message each, say
		if v, ok := p.setting(keyRelayDomains); !ok || v != domains {
			t.Fatalf("setting = %q, %v after a read failure, want the cached value", v, ok)
		}
	}
	if n := strings.Count(logs.String(), "cannot read a mail intake setting"); n != 1 {
		t.Fatalf("%d warnings for 100 reads that failed, want 1:\n%s", n, logs.String())
	}
}
