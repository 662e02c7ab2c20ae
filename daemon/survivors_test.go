package daemon

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/cluster"
	"github.com/pmgcm/pmgcm/fsm"
	"github.com/pmgcm/pmgcm/raftnode"
)

// TestSurvivorsVerdict: the refusal of a forced promotion is the same whatever order the
// members answered in, and names the member that matters: one that still reaches a
// master first, else the one with the longest log.
func TestSurvivorsVerdict(t *testing.T) {
	mine := raftnode.Stats{LastLogTerm: 3, LastIndex: 100}
	sv := func(cid, term, index, master uint64, state string) survivor {
		return survivor{m: fsm.Member{CID: cid, Name: "n", IP: "10.0.0.1"},
			n: api.Node{LastLogTerm: term, LastIndex: index, MasterCID: master, State: state}}
	}
	cases := []struct {
		name    string
		answers []survivor
		want    error
		names   string // "cid N" the error must name
	}{
		{"all behind", []survivor{sv(2, 3, 90, 0, api.StateActive), sv(3, 2, 500, 0, api.StateActive)}, nil, ""},
		{"down ignored", []survivor{sv(2, 9, 900, 1, api.StateDown)}, nil, ""},
		{"longest log named", []survivor{sv(2, 3, 150, 0, api.StateActive), sv(3, 4, 10, 0, api.StateActive), sv(4, 3, 120, 0, api.StateActive)}, ErrBehind, "cid 3 "},
		{"tie: lowest cid", []survivor{sv(5, 4, 10, 0, api.StateActive), sv(3, 4, 10, 0, api.StateActive)}, ErrBehind, "cid 3 "},
		{"a master first", []survivor{sv(2, 9, 900, 0, api.StateActive), sv(4, 1, 1, 7, api.StateActive), sv(3, 1, 1, 7, api.StateActive)}, ErrNotMaster, "cid 3 "},
	}
	for _, c := range cases {
		for turn := 0; turn < 2; turn++ {
			answers := slices.Clone(c.answers)
			if turn == 1 {
				slices.Reverse(answers)
			}
			err := survivorsVerdict(mine, answers)
			if c.want == nil {
				if err != nil {
					t.Errorf("%s: %v", c.name, err)
				}
				continue
			}
			if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.names) {
				t.Errorf("%s (order %d): %v, want %v naming %q", c.name, turn, err, c.want, c.names)
			}
		}
	}
}

// TestMemberClashByTheStateMachinesRule: the join check refuses what the state machine
// would refuse: names compare case-insensitively, addresses by IP.
func TestMemberClashByTheStateMachinesRule(t *testing.T) {
	members := []fsm.Member{{CID: 2, Name: "pmg2", IP: "10.0.0.2", Fingerprint: "fp2"}}
	for _, c := range []struct {
		name, ip string
		clash    bool
	}{
		{"pmg3", "10.0.0.3", false},
		{"PMG2", "10.0.0.3", true},
		{"pmg3", "::ffff:10.0.0.2", true},
	} {
		err := memberClash(members, c.name, c.ip)
		if (err != nil) != c.clash || (err != nil && !errors.Is(err, fsm.ErrMemberExists)) {
			t.Errorf("join of %s at %s: %v, want clash %v", c.name, c.ip, err, c.clash)
		}
	}
}

// TestBadRequestMarkers: the daemon's own ErrBadRequest and the protocol's are HTTP 400.
func TestBadRequestMarkers(t *testing.T) {
	for _, err := range []error{ErrBadRequest, cluster.ErrBadRequest} {
		rec := httptest.NewRecorder()
		writeErr(rec, err)
		if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), api.CodeBadRequest) {
			t.Errorf("%v answered %d %s", err, rec.Code, rec.Body)
		}
	}
	if _, err := (&Daemon{cfg: Config{Port: 1}}).masterAddr("not-an-ip"); !errors.Is(err, ErrBadRequest) || errors.Is(err, fsm.ErrBadCommand) {
		t.Errorf("a bad master address: %v, want the daemon's ErrBadRequest", err)
	}
}
