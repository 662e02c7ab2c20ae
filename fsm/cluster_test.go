package fsm

import (
	"errors"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/raft"
)

func TestCreateCluster(t *testing.T) {
	mod := func(f func(*CreateCluster)) CreateCluster {
		c := createCmd()
		f(&c)
		return c
	}
	tests := []struct {
		name string
		cmd  CreateCluster
		err  error
	}{
		{"ok", createCmd(), nil},
		{"no token", mod(func(c *CreateCluster) { c.JoinTokenHash = nil }), nil},
		{"empty id", mod(func(c *CreateCluster) { c.ClusterID = "" }), ErrBadCommand},
		{"long id", mod(func(c *CreateCluster) { c.ClusterID = strings.Repeat("x", maxNameLen+1) }), ErrBadCommand},
		{"founder cid 2", mod(func(c *CreateCluster) { c.Founder.CID = 2 }), ErrBadCommand},
		{"founder nonvoter", mod(func(c *CreateCluster) { c.Founder.Suffrage = Nonvoter }), ErrBadCommand},
		{"founder no name", mod(func(c *CreateCluster) { c.Founder.Name = "" }), ErrBadCommand},
		{"founder bad ip", mod(func(c *CreateCluster) { c.Founder.IP = "host" }), ErrBadCommand},
		{"founder bad port", mod(func(c *CreateCluster) { c.Founder.Port = 70000 }), ErrBadCommand},
		{"founder no fingerprint", mod(func(c *CreateCluster) { c.Founder.Fingerprint = "" }), ErrBadCommand},
		{"token not sha256", mod(func(c *CreateCluster) { c.JoinTokenHash = []byte("short") }), ErrBadCommand},
		{"huge salt", mod(func(c *CreateCluster) { c.JoinTokenSalt = make([]byte, maxNameLen+1) }), ErrBadCommand},
		{"huge CA key", mod(func(c *CreateCluster) { c.CAKeyPEM = make([]byte, maxPEMLen+1) }), ErrBadCommand},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			res := h.apply(tt.cmd)
			wantErr(t, res.Err, tt.err)
			cl := h.f.Cluster()
			if tt.err != nil {
				if cl != nil || len(h.f.Members()) != 0 {
					t.Fatalf("failed create left state: %+v %+v", cl, h.f.Members())
				}
				return
			}
			want := &Cluster{ID: "c-1234", CreatedAt: t0, Epoch: 1, CACertPEM: tt.cmd.CACertPEM,
				CAKeyPEM: tt.cmd.CAKeyPEM, JoinTokenSalt: []byte("salt"), JoinTokenHash: tt.cmd.JoinTokenHash, NextCID: 2}
			if !reflect.DeepEqual(cl, want) {
				t.Fatalf("Cluster() = %+v, want %+v", cl, want)
			}
			if ms := h.f.Members(); !reflect.DeepEqual(ms, []Member{member(1)}) {
				t.Fatalf("Members() = %+v", ms)
			}
		})
	}
}

func TestCreateClusterTwice(t *testing.T) {
	h := withCluster(t, 2)
	c := createCmd()
	c.ClusterID = "other"
	wantErr(t, h.apply(c).Err, ErrClusterExists)
	if h.f.Cluster().ID != "c-1234" || len(h.f.Members()) != 2 {
		t.Fatalf("second create changed state")
	}
}

func TestCreateKeepsConfig(t *testing.T) {
	h := newHarness(t)
	h.must(ConfigSet{Key: "mail/relay", Value: []byte("10.0.0.1")})
	h.must(createCmd())
	e, ok := h.f.mustGet("mail/relay")
	if !ok || string(e.Value) != "10.0.0.1" || e.Version != 1 {
		t.Fatalf("config lost by create: %+v %v", e, ok)
	}
}

func TestMemberCommandsNeedCluster(t *testing.T) {
	for _, c := range []Command{
		AddMember{Member: member(1)},
		RemoveMember{CID: 1},
		SetSuffrage{CID: 1, Suffrage: Voter},
		SetJoinToken{Hash: tokenHash("x")},
		SetEpoch{Epoch: 2, Members: []Member{member(1)}},
		UpdateMember{Member: member(1)},
	} {
		h := newHarness(t)
		wantErr(t, h.apply(c).Err, ErrNoCluster)
	}
}

func TestAddMember(t *testing.T) {
	mod := func(cid uint64, f func(*Member)) Member {
		m := member(cid)
		f(&m)
		return m
	}
	// Each case runs on a cluster with members 1 and 2 (NextCID 3).
	tests := []struct {
		name string
		m    Member
		err  error
		cid  uint64 // Result.CID
	}{
		{"ok", member(3), nil, 3},
		{"nonvoter", mod(3, func(m *Member) { m.Suffrage = Nonvoter }), nil, 3},
		{"ipv6", mod(3, func(m *Member) { m.IP = "fd00::3" }), nil, 3},
		{"stale cid", member(2), ErrMemberExists, 0},
		{"wrong cid", mod(4, func(m *Member) { m.Name, m.IP, m.Fingerprint = "x", "10.0.0.4", "X" }), ErrBadCommand, 3},
		{"zero cid", mod(0, func(m *Member) {}), ErrBadCommand, 0},
		{"dup name", mod(3, func(m *Member) { m.Name = "PMG1" }), ErrMemberExists, 0},
		{"dup ip", mod(3, func(m *Member) { m.IP = "127.0.0.2" }), ErrMemberExists, 0},
		{"dup ip mapped", mod(3, func(m *Member) { m.IP = "::ffff:127.0.0.2" }), ErrMemberExists, 0},
		{"dup fingerprint", mod(3, func(m *Member) { m.Fingerprint = "aa:bb:01" }), ErrMemberExists, 0},
		{"bad suffrage", mod(3, func(m *Member) { m.Suffrage = "king" }), ErrBadCommand, 0},
		{"port 0", mod(3, func(m *Member) { m.Port = 0 }), ErrBadCommand, 0},
		{"long name", mod(3, func(m *Member) { m.Name = strings.Repeat("n", maxNameLen+1) }), ErrBadCommand, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := withCluster(t, 2)
			res := h.apply(AddMember{Member: tt.m})
			wantErr(t, res.Err, tt.err)
			if res.CID != tt.cid {
				t.Errorf("Result.CID = %d, want %d", res.CID, tt.cid)
			}
			wantNext, wantN := uint64(3), 2
			if tt.err == nil {
				wantNext, wantN = 4, 3
				if got, ok := h.f.Member(3); !ok || got != tt.m {
					t.Errorf("Member(3) = %+v, %v", got, ok)
				}
			}
			if next := h.f.Cluster().NextCID; next != wantNext {
				t.Errorf("NextCID = %d, want %d", next, wantNext)
			}
			if n := len(h.f.Members()); n != wantN {
				t.Errorf("%d members, want %d", n, wantN)
			}
		})
	}
}

func TestCIDsNeverReused(t *testing.T) {
	h := withCluster(t, 3)
	h.must(RemoveMember{CID: 3})
	wantErr(t, h.apply(AddMember{Member: member(3)}).Err, ErrBadCommand)
	// The removed node may come back, under the next CID.
	m := member(3)
	m.CID = 4
	if res := h.must(AddMember{Member: m}); res.CID != 4 {
		t.Fatalf("CID = %d, want 4", res.CID)
	}
	if _, ok := h.f.Member(3); ok {
		t.Fatalf("CID 3 reused")
	}
	if h.f.Cluster().NextCID != 5 {
		t.Fatalf("NextCID = %d, want 5", h.f.Cluster().NextCID)
	}
}

func TestRemoveMember(t *testing.T) {
	h := withCluster(t, 3)
	h.must(RemoveMember{CID: 2})
	wantErr(t, h.apply(RemoveMember{CID: 2}).Err, ErrUnknownMember)
	wantErr(t, h.apply(RemoveMember{CID: 99}).Err, ErrUnknownMember)
	got := h.f.Members()
	if len(got) != 2 || got[0].CID != 1 || got[1].CID != 3 {
		t.Fatalf("Members() = %+v", got)
	}
	if _, ok := h.f.MemberByFingerprint(member(2).Fingerprint); ok {
		t.Fatalf("removed member still found by fingerprint")
	}
}

func TestSetSuffrage(t *testing.T) {
	h := withCluster(t, 2)
	h.must(SetSuffrage{CID: 2, Suffrage: Nonvoter})
	if m, _ := h.f.Member(2); m.Suffrage != Nonvoter {
		t.Fatalf("suffrage = %q", m.Suffrage)
	}
	wantErr(t, h.apply(SetSuffrage{CID: 9, Suffrage: Voter}).Err, ErrUnknownMember)
	wantErr(t, h.apply(SetSuffrage{CID: 2, Suffrage: ""}).Err, ErrBadCommand)
	if m, _ := h.f.Member(2); m.Suffrage != Nonvoter {
		t.Fatalf("failed command changed suffrage to %q", m.Suffrage)
	}
}

func TestSetJoinToken(t *testing.T) {
	h := withCluster(t, 1)
	h.must(SetJoinToken{Hash: tokenHash("new"), Salt: []byte("s2")})
	if cl := h.f.Cluster(); string(cl.JoinTokenHash) != string(tokenHash("new")) || string(cl.JoinTokenSalt) != "s2" {
		t.Fatalf("hash = %x salt = %q", cl.JoinTokenHash, cl.JoinTokenSalt)
	}
	wantErr(t, h.apply(SetJoinToken{Hash: []byte{1, 2, 3}}).Err, ErrBadCommand)
	h.must(SetJoinToken{})
	if got := h.f.Cluster().JoinTokenHash; len(got) != 0 {
		t.Fatalf("hash = %x, want empty", got)
	}
}

func TestSetEpoch(t *testing.T) {
	fenced := member(2)
	fenced.Suffrage = Nonvoter
	dupIP := member(3)
	dupIP.IP = member(1).IP
	tests := []struct {
		name    string
		cmd     SetEpoch
		err     error
		members []Member
	}{
		{"promote 1 alone", SetEpoch{Epoch: 2, Members: []Member{member(1)}}, nil, []Member{member(1)}},
		{"keep a nonvoter", SetEpoch{Epoch: 5, Members: []Member{fenced, member(1)}}, nil, []Member{member(1), fenced}},
		{"same epoch", SetEpoch{Epoch: 1, Members: []Member{member(1)}}, ErrBadCommand, nil},
		{"older epoch", SetEpoch{Epoch: 0, Members: []Member{member(1)}}, ErrBadCommand, nil},
		{"no members", SetEpoch{Epoch: 2}, ErrBadCommand, nil},
		{"unissued cid", SetEpoch{Epoch: 2, Members: []Member{member(4)}}, ErrBadCommand, nil},
		{"cid twice", SetEpoch{Epoch: 2, Members: []Member{member(1), member(1)}}, ErrBadCommand, nil},
		{"dup ip", SetEpoch{Epoch: 2, Members: []Member{member(1), dupIP}}, ErrBadCommand, nil},
		{"invalid member", SetEpoch{Epoch: 2, Members: []Member{{CID: 1}}}, ErrBadCommand, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := withCluster(t, 3)
			before := h.f.Members()
			res := h.apply(tt.cmd)
			wantErr(t, res.Err, tt.err)
			cl := h.f.Cluster()
			if tt.err != nil {
				if cl.Epoch != 1 || !reflect.DeepEqual(h.f.Members(), before) {
					t.Fatalf("failed SetEpoch changed state")
				}
				return
			}
			if cl.Epoch != tt.cmd.Epoch || cl.NextCID != 4 {
				t.Fatalf("cluster = %+v", cl)
			}
			if got := h.f.Members(); !reflect.DeepEqual(got, tt.members) {
				t.Fatalf("Members() = %+v, want %+v", got, tt.members)
			}
		})
	}
}

func TestUpdateMember(t *testing.T) {
	h := withCluster(t, 3)
	m := member(2)
	m.Fingerprint = "CC:DD:EE"
	m.Suffrage = Nonvoter
	h.must(UpdateMember{Member: m})
	if got, _ := h.f.Member(2); got != m {
		t.Fatalf("Member(2) = %+v, want %+v", got, m)
	}
	if got, ok := h.f.MemberByFingerprint("cc:dd:ee"); !ok || got.CID != 2 {
		t.Fatalf("MemberByFingerprint = %+v, %v", got, ok)
	}
	if _, ok := h.f.MemberByFingerprint(member(2).Fingerprint); ok {
		t.Fatalf("old fingerprint still found")
	}
	// Same record again is fine (it only clashes with itself).
	h.must(UpdateMember{Member: m})

	clash := m
	clash.Name = member(3).Name
	wantErr(t, h.apply(UpdateMember{Member: clash}).Err, ErrMemberExists)
	wantErr(t, h.apply(UpdateMember{Member: member(7)}).Err, ErrUnknownMember)
	bad := m
	bad.IP = ""
	wantErr(t, h.apply(UpdateMember{Member: bad}).Err, ErrBadCommand)
	if got, _ := h.f.Member(2); got != m {
		t.Fatalf("failed update changed the member: %+v", got)
	}
}

// TestApplyUndecodable: a malformed entry is refused and applying goes on past it; an
// entry of an unknown encoding or type halts the FSM (TestHaltOnUnknownCommand).
func TestApplyUndecodable(t *testing.T) {
	h := withCluster(t, 1)
	for _, data := range [][]byte{nil, {1}, {1, 2, '{'}} {
		before := h.f.AppliedIndex()
		res := h.applyRaw(data)
		if !errors.Is(res.Err, ErrBadCommand) {
			t.Fatalf("Apply(%q): %v, want ErrBadCommand", data, res.Err)
		}
		if h.f.AppliedIndex() != before+1 {
			t.Fatalf("AppliedIndex did not move")
		}
	}
	for _, data := range [][]byte{{9, 2, '{', '}'}, {1, 77, '{', '}'}} {
		f := withCluster(t, 1)
		res := f.applyRaw(data)
		if !errors.Is(res.Err, ErrUnknownCommand) || !errors.Is(res.Err, ErrHalted) {
			t.Fatalf("Apply(%q): %v, want ErrHalted and ErrUnknownCommand", data, res.Err)
		}
	}
	h = withCluster(t, 1)
	res := h.applyRaw([]byte{1, 77, '{', '}'})
	if !strings.Contains(res.Err.Error(), "command type 77 (encoding v1)") {
		t.Fatalf("err = %v", res.Err)
	}
}

func TestApplyOtherLogTypes(t *testing.T) {
	f := New()
	var seen []uint64
	f.SetOnApply(func(i uint64) { seen = append(seen, i) })
	for i, typ := range []raft.LogType{raft.LogNoop, raft.LogConfiguration, raft.LogBarrier} {
		if out := f.Apply(&raft.Log{Type: typ, Index: uint64(i + 1)}); out != nil {
			t.Fatalf("Apply(%v) = %#v, want nil", typ, out)
		}
	}
	b, _ := Encode(ConfigSet{Key: "k", Value: []byte("v")})
	f.Apply(&raft.Log{Type: raft.LogCommand, Index: 4, Data: b})
	if f.AppliedIndex() != 4 || !reflect.DeepEqual(seen, []uint64{1, 2, 3, 4}) {
		t.Fatalf("AppliedIndex = %d, hook saw %v", f.AppliedIndex(), seen)
	}
}

func TestReadersReturnCopies(t *testing.T) {
	h := withCluster(t, 1)
	cl := h.f.Cluster()
	cl.CAKeyPEM[0] = 'X'
	cl.Epoch = 99
	if got := h.f.Cluster(); got.CAKeyPEM[0] == 'X' || got.Epoch != 1 {
		t.Fatalf("Cluster() shares state")
	}
}

// TestDeterministic replays one log into two FSMs and compares snapshots.
func TestDeterministic(t *testing.T) {
	var logs [][]byte
	cmds := []Command{createCmd(), ConfigSet{Key: "a", Value: []byte("1")}}
	for cid := uint64(2); cid <= 9; cid++ {
		cmds = append(cmds, AddMember{Member: member(cid)}, ConfigSet{Key: "m/" + member(cid).Name, Value: []byte{byte(cid)}})
	}
	cmds = append(cmds, RemoveMember{CID: 4}, AddMember{Member: member(2)}, SetEpoch{Epoch: 3, Members: []Member{member(1), member(5)}})
	for _, c := range cmds {
		b, err := Encode(c)
		if err != nil {
			t.Fatal(err)
		}
		logs = append(logs, b)
	}
	var snaps [2]string
	var errs [2][]string
	for n := range snaps {
		f := New()
		for i, b := range logs {
			res := f.Apply(&raft.Log{Type: raft.LogCommand, Index: uint64(i + 1), Data: b}).(*Result)
			errs[n] = append(errs[n], errString(res.Err))
		}
		snaps[n] = persist(t, f)
	}
	if snaps[0] != snaps[1] || !reflect.DeepEqual(errs[0], errs[1]) {
		t.Fatalf("two replays differ")
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func TestConcurrentReaders(t *testing.T) {
	h := withCluster(t, 1)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for r := 0; r < 4; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				h.f.mustList("")
				h.f.Members()
				h.f.Cluster()
				h.f.mustGet("k")
				h.f.MemberByFingerprint("x")
				h.f.AppliedIndex()
			}
		}()
	}
	for i := 0; i < 200; i++ {
		h.must(ConfigSet{Key: "k", Value: []byte{byte(i)}})
		if i%50 == 0 {
			persist(t, h.f)
		}
	}
	close(stop)
	wg.Wait()
}

// TestEpochFencing: a forced promotion's SetEpoch leaves the other members in the old
// epoch (fenced); UpdateMember re-admits one; no member may claim a future epoch.
func TestEpochFencing(t *testing.T) {
	h := withCluster(t, 3)
	m1, _ := h.f.Member(1)
	m2, _ := h.f.Member(2)
	m3, _ := h.f.Member(3)
	added := member(4)
	added.Epoch = 0
	added.Suffrage = Nonvoter
	if res := h.must(AddMember{Member: added}); res.CID != 4 {
		t.Fatalf("AddMember cid = %d", res.CID)
	}
	if m4, _ := h.f.Member(4); m4.Epoch != 1 {
		t.Fatalf("AddMember stamped epoch %d, want the cluster's 1", m4.Epoch)
	}

	future := m1
	future.Epoch = 3
	wantErr(t, h.apply(SetEpoch{Epoch: 2, Members: []Member{future}}).Err, ErrBadCommand)

	m1.Epoch = 2
	h.must(SetEpoch{Epoch: 2, Members: []Member{m1, m2, m3}})
	if cl := h.f.Cluster(); cl.Epoch != 2 {
		t.Fatalf("epoch = %d, want 2", cl.Epoch)
	}
	for cid, want := range map[uint64]bool{1: false, 2: true, 3: true} {
		m, _ := h.f.Member(cid)
		if m.Fenced(2) != want {
			t.Errorf("cid %d fenced = %v, want %v", cid, m.Fenced(2), want)
		}
	}
	if _, ok := h.f.Member(4); ok {
		t.Fatal("cid 4, left out of SetEpoch, is still a member")
	}

	m2.Epoch = 3
	wantErr(t, h.apply(UpdateMember{Member: m2}).Err, ErrBadCommand)
	m2.Epoch = 2
	h.must(UpdateMember{Member: m2})
	if m, _ := h.f.Member(2); m.Fenced(2) {
		t.Fatal("cid 2 still fenced after UpdateMember to the current epoch")
	}
}
