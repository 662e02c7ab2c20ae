package membership

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/pmgcm/pmgcm/fsm"
)

// conf builds a Raft configuration from "cid:v" (voter) and "cid:n" (non-voter) items.
func conf(items ...string) raft.Configuration {
	var c raft.Configuration
	for _, it := range items {
		id, s, _ := strings.Cut(it, ":")
		suf := raft.Voter
		if s == "n" {
			suf = raft.Nonvoter
		}
		c.Servers = append(c.Servers, raft.Server{ID: raft.ServerID(id), Suffrage: suf, Address: raft.ServerAddress("10.0.0." + id + ":8006")})
	}
	return c
}

// mem builds members with the given CIDs, each recorded with the suffrage of recorded
// ("v"/"n", one letter per member; empty means all voters).
func mem(recorded string, cids ...uint64) []fsm.Member {
	var out []fsm.Member
	for i, cid := range cids {
		s := fsm.Voter
		if i < len(recorded) && recorded[i] == 'n' {
			s = fsm.Nonvoter
		}
		out = append(out, fsm.Member{CID: cid, IP: fmt.Sprintf("10.0.0.%d", cid), Port: 8006, Suffrage: s})
	}
	return out
}

// brief renders a plan as "op cid" items.
func brief(p []Change) []string {
	out := []string{}
	for _, c := range p {
		s := fmt.Sprintf("%s %s", c.Op, c.ID)
		if c.Op == Record {
			s += " " + string(c.Suffrage)
		}
		out = append(out, s)
	}
	return out
}

func TestPlan(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    Facts
		want []string
	}{
		{"in line: nothing to do",
			Facts{Config: conf("1:v", "2:v", "3:v"), Members: mem("", 1, 2, 3), Leader: 1},
			[]string{}},
		{"a new member is added as non-voter, not promoted before it caught up",
			Facts{Config: conf("1:v"), Members: mem("vn", 1, 2), Leader: 1},
			[]string{"add-nonvoter 2"}},
		{"a caught-up non-voter of a 2-node cluster is promoted",
			Facts{Config: conf("1:v", "2:n"), Members: mem("vn", 1, 2), Leader: 1, CaughtUp: map[uint64]bool{2: true}},
			[]string{"promote 2", "record 2 voter"}},
		{"3 nodes: the third caught-up node becomes a voter",
			Facts{Config: conf("1:v", "2:v", "3:n"), Members: mem("vvn", 1, 2, 3), Leader: 1, CaughtUp: map[uint64]bool{3: true}},
			[]string{"promote 3", "record 3 voter"}},
		{"4 nodes keep 3 voters: a caught-up fourth stays a non-voter",
			Facts{Config: conf("1:v", "2:v", "3:v", "4:n"), Members: mem("vvvn", 1, 2, 3, 4), Leader: 1, CaughtUp: map[uint64]bool{4: true}},
			[]string{}},
		{"4 voters are one too many: the highest CID by number is demoted (10, not 9)",
			Facts{Config: conf("1:v", "9:v", "10:v", "2:v"), Members: mem("", 1, 2, 9, 10), Leader: 1},
			[]string{"demote 10", "record 10 nonvoter"}},
		{"the leader is never demoted, even with the highest CID",
			Facts{Config: conf("1:v", "2:v", "3:v", "10:v"), Members: mem("", 1, 2, 3, 10), Leader: 10},
			[]string{"demote 3", "record 3 nonvoter"}},
		{"a deleted member's server is removed, then the count is made odd",
			Facts{Config: conf("1:v", "2:v", "3:v", "4:n"), Members: mem("vvn", 1, 2, 4), Leader: 1, CaughtUp: map[uint64]bool{4: true}},
			[]string{"remove 3", "promote 4", "record 4 voter"}},
		{"a removed member leaves 2 voters of 2 nodes",
			Facts{Config: conf("1:v", "2:v", "3:v"), Members: mem("", 1, 2), Leader: 2},
			[]string{"remove 3"}},
		{"the leader is never removed, even if not (yet) a member",
			Facts{Config: conf("1:v", "2:v"), Members: mem("", 2), Leader: 1},
			[]string{}},
		{"promotion goes by CID, lowest first, and stops at the count",
			Facts{Config: conf("1:v", "2:n", "3:n", "11:n", "12:n"), Members: mem("vnnnn", 1, 2, 3, 11, 12), Leader: 1,
				CaughtUp: map[uint64]bool{12: true, 11: true, 3: true, 2: true}},
			[]string{"promote 2", "promote 3", "promote 11", "promote 12", "record 2 voter", "record 3 voter", "record 11 voter", "record 12 voter"}},
		{"6 nodes: 5 voters",
			Facts{Config: conf("1:v", "2:v", "3:v", "4:n", "5:n", "6:n"), Members: mem("vvvnnn", 1, 2, 3, 4, 5, 6), Leader: 1,
				CaughtUp: map[uint64]bool{4: true, 5: true, 6: true}},
			[]string{"promote 4", "promote 5", "record 4 voter", "record 5 voter"}},
		{"a transfer target is made a voter whatever its catch-up; another voter is demoted to keep it odd",
			Facts{Config: conf("1:v", "2:v", "3:v", "4:n"), Members: mem("vvvn", 1, 2, 3, 4), Leader: 1, Keep: []uint64{4}},
			[]string{"promote 4", "demote 3", "record 3 nonvoter", "record 4 voter"}},
		{"a transfer target with the highest CID is not the one demoted",
			Facts{Config: conf("1:v", "2:v", "9:v", "10:n"), Members: mem("vvvn", 1, 2, 9, 10), Leader: 2, Keep: []uint64{10}},
			[]string{"promote 10", "demote 9", "record 9 nonvoter", "record 10 voter"}},
		{"a recorded suffrage that differs from Raft's is corrected",
			Facts{Config: conf("1:v", "2:n"), Members: mem("vv", 1, 2), Leader: 1},
			[]string{"record 2 nonvoter"}},
		{"a server whose ID is no CID is removed",
			Facts{Config: conf("1:v", "x:n"), Members: mem("", 1), Leader: 1},
			[]string{"remove x"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := brief(Plan(tc.f))
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("Plan = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestPlanIsStable: carrying out a plan and planning again gives nothing more to do.
func TestPlanIsStable(t *testing.T) {
	f := Facts{Config: conf("1:v", "2:v", "9:v", "10:v", "4:n", "7:v"), Members: mem("vvvvnn", 1, 2, 9, 10, 4, 5), Leader: 9,
		CaughtUp: map[uint64]bool{4: true, 5: true}}
	for round := 0; round < 3; round++ {
		p := Plan(f)
		if round > 0 && len(p) > 0 {
			t.Fatalf("round %d: plan %q after the previous one was carried out", round, brief(p))
		}
		f = apply(f, p)
	}
	voters := 0
	for _, s := range f.Config.Servers {
		if s.Suffrage == raft.Voter {
			voters++
		}
	}
	if len(f.Config.Servers) != 6 || voters != WantVoters(6) {
		t.Fatalf("outcome %+v", f.Config.Servers)
	}
}

// apply carries out p on the facts, as the daemon does on Raft and the member list.
func apply(f Facts, p []Change) Facts {
	var servers []raft.Server
	idx := map[raft.ServerID]int{}
	for _, s := range f.Config.Servers {
		idx[s.ID] = len(servers)
		servers = append(servers, s)
	}
	members := append([]fsm.Member(nil), f.Members...)
	for _, c := range p {
		switch c.Op {
		case AddNonvoter:
			idx[c.ID] = len(servers)
			servers = append(servers, raft.Server{ID: c.ID, Suffrage: raft.Nonvoter})
		case Remove:
			servers[idx[c.ID]].ID = ""
		case Promote:
			servers[idx[c.ID]].Suffrage = raft.Voter
		case Demote:
			servers[idx[c.ID]].Suffrage = raft.Nonvoter
		case Record:
			for i := range members {
				if members[i].CID == c.CID {
					members[i].Suffrage = c.Suffrage
				}
			}
		}
	}
	f.Config = raft.Configuration{}
	for _, s := range servers {
		if s.ID != "" {
			f.Config.Servers = append(f.Config.Servers, s)
		}
	}
	f.Members = members
	return f
}

func TestWantVoters(t *testing.T) {
	for nodes, want := range []int{0, 1, 2, 3, 3, 5, 5, 5, 5} {
		if got := WantVoters(nodes); got != want {
			t.Errorf("WantVoters(%d) = %d, want %d", nodes, got, want)
		}
	}
}

func TestWaiting(t *testing.T) {
	if got := Waiting(conf("1:v", "2:v", "3:v", "4:n"), mem("", 1, 2, 3, 4)); got != nil {
		t.Fatalf("voters complete, yet waiting %v", got)
	}
	if got := Waiting(conf("1:v", "10:n", "9:n"), mem("", 1, 9, 10, 11)); !reflect.DeepEqual(got, []uint64{9, 10, 11}) {
		t.Fatalf("waiting = %v, want [9 10 11] (11 is not in Raft yet)", got)
	}
}

func TestServerID(t *testing.T) {
	if ServerID(10) != "10" {
		t.Fatal(ServerID(10))
	}
	for id, want := range map[raft.ServerID]bool{"10": true, "0": false, "x": false, "": false, "-1": false} {
		if _, ok := ParseServerID(id); ok != want {
			t.Errorf("ParseServerID(%q) ok = %v", id, ok)
		}
	}
}
