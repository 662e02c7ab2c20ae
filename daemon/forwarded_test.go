package daemon

import (
	"errors"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/fsm"
)

// TestCheckForwarded: the master takes from a member what members forward (config
// writes, a derived token rotation, a member record written unchanged) and refuses the
// rest.
func TestCheckForwarded(t *testing.T) {
	f := fsm.New()
	caKey := []byte("ca key")
	founder := fsm.Member{CID: 1, Name: "n1", IP: "10.0.0.1", Port: 8006, Fingerprint: "fp1", Suffrage: fsm.Voter,
		JoinedAt: time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)}
	applyAll(t, f, fsm.CreateCluster{ClusterID: "c", CAKeyPEM: caKey, Founder: founder})
	d := &Daemon{fsm: f}
	founder.Epoch = 1
	salt := []byte("0123456789abcdef")
	ok := []fsm.Command{
		fsm.ConfigSet{Key: "k", Value: []byte("v")},
		fsm.ConfigDelete{Key: "k"},
		fsm.SetJoinToken{Hash: hashToken(joinToken(caKey, salt)), Salt: salt},
		fsm.UpdateMember{Member: founder},
	}
	for _, c := range ok {
		if err := d.checkForwarded(c); err != nil {
			t.Errorf("%s refused: %v", c.Type(), err)
		}
	}
	changed := founder
	changed.Fingerprint = "fp-other"
	refused := []fsm.Command{
		fsm.UpdateMember{Member: changed},
		fsm.AddMember{Member: fsm.Member{CID: 2, Name: "x", IP: "10.0.0.9", Port: 8006, Fingerprint: "fp9", Suffrage: fsm.Voter}},
		fsm.RemoveMember{CID: 1},
		fsm.SetSuffrage{CID: 1, Suffrage: fsm.Nonvoter},
		fsm.SetEpoch{Epoch: 2, Members: []fsm.Member{founder}},
		fsm.SetJoinToken{Hash: hashToken("chosen"), Salt: salt},
		fsm.SetJoinToken{},
		fsm.CreateCluster{ClusterID: "d"},
		fsm.RestoreConfig{Reset: true},
	}
	for _, c := range refused {
		if err := d.checkForwarded(c); !errors.Is(err, ErrForbidden) {
			t.Errorf("forwarded %s: %v, want ErrForbidden", c.Type(), err)
		}
	}
}
