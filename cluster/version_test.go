package cluster

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// TestCommon: the highest version in every range, or none.
func TestCommon(t *testing.T) {
	for _, c := range []struct {
		ranges []ProtocolRange
		want   int // 0: incompatible
	}{
		{[]ProtocolRange{{2, 2}, {2, 2}}, 2},
		{[]ProtocolRange{{2, 3}, {2, 2}}, 2},
		{[]ProtocolRange{{2, 3}, {2, 4}, {3, 5}}, 3},
		{[]ProtocolRange{{2, 3}, {3, 4}}, 3},
		{[]ProtocolRange{{2, 2}, {3, 3}}, 0},
		{[]ProtocolRange{{2, 3}, {4, 5}}, 0},
		{nil, 0},
	} {
		got, err := Common(c.ranges...)
		if c.want == 0 {
			if !errors.Is(err, ErrIncompatible) {
				t.Errorf("Common(%v) = %d, %v; want incompatible", c.ranges, got, err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("Common(%v) = %d, %v; want %d", c.ranges, got, err, c.want)
		}
	}
}

// TestCheckCompatible: a join works when both ranges contain the version the cluster
// runs at; the joined node speaks that version, even if both could speak a newer one.
func TestCheckCompatible(t *testing.T) {
	first := PeerRange(2, 0, 0) // 1ca55cd: protocol_version 2, no range
	future := ProtocolRange{2, 3}
	for _, c := range []struct {
		name         string
		mine, theirs ProtocolRange
		running      int
		state        int
		want         int    // 0: refused
		msg1, msg2   string // in the refusal
	}{
		{"same build", SpeakRange(ProtocolVersion), SpeakRange(ProtocolVersion), ProtocolVersion, StateFormat, ProtocolVersion, "", ""},
		{"this build and the first release", SpeakRange(ProtocolVersion), first, 2, StateFormat, 2, "", ""},
		{"a version 3 build joins a cluster of 2", future, first, 2, StateFormat, 2, "", ""},
		{"a cluster of 2 with a version 3 master admits a first-release node", future, first, 2, StateFormat, 2, "", ""},
		{"two version 3 builds in a cluster that runs 2", future, future, 2, StateFormat, 2, "", ""},
		{"a node older than the cluster", future, first, 3, StateFormat, 0, "runs protocol 3", "older than the cluster"},
		{"no version in common", ProtocolRange{3, 3}, ProtocolRange{2, 2}, 2, StateFormat, 0, "protocol 3", "protocol 2"},
		{"state format", SpeakRange(ProtocolVersion), SpeakRange(ProtocolVersion), 2, StateFormat + 1, 0, "state format", "upgrade the older one"},
	} {
		got, err := CheckCompatible(c.mine, c.theirs, c.running, c.state)
		if c.want == 0 {
			if !errors.Is(err, ErrIncompatible) || !strings.Contains(err.Error(), c.msg1) || !strings.Contains(err.Error(), c.msg2) {
				t.Errorf("%s: %d, %v; want a refusal naming %q and %q", c.name, got, err, c.msg1, c.msg2)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%s: %d, %v; want %d", c.name, got, err, c.want)
		}
	}
}

// TestFirstReleaseSees2: what this build announces, decoded as the first release
// decodes it (only protocol_version), says 2, so that 1ca55cd, which refuses any other
// version, takes it; and a first-release announcement is read as exactly 2.
func TestFirstReleaseSees2(t *testing.T) {
	r := SpeakRange(ProtocolVersion)
	b, err := json.Marshal(JoinInfo{Name: "n", ProtocolVersion: ProtocolVersion, StateFormat: StateFormat, ProtocolMin: r.Min, ProtocolMax: r.Max})
	if err != nil {
		t.Fatal(err)
	}
	var old struct { // daemon/join.go of 1ca55cd
		ProtocolVersion int `json:"protocol_version"`
		StateFormat     int `json:"state_format"`
	}
	if err := json.Unmarshal(b, &old); err != nil || old.ProtocolVersion != 2 {
		t.Fatalf("the first release reads protocol %d (%v) from %s", old.ProtocolVersion, err, b)
	}
	var info JoinInfo
	if err := json.Unmarshal([]byte(`{"cluster_id":"c","name":"n","cid":1,"protocol_version":2,"state_format":1}`), &info); err != nil {
		t.Fatal(err)
	}
	if got := PeerRange(info.ProtocolVersion, info.ProtocolMin, info.ProtocolMax); got != (ProtocolRange{2, 2}) {
		t.Fatalf("a first-release announcement read as %v", got)
	}
}
