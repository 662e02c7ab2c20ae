package cluster

import "fmt"

// Protocol version negotiation. Every node can speak a range of protocol versions; a
// cluster runs at one version at a time, which every member speaks (each connection
// of every pair uses it, so that no member gets a message another cannot read). A node
// joins when its range contains the version the cluster runs at, and then speaks that
// version, even if it could speak a newer one: so a newer build joins a cluster of
// older nodes and runs at their version. The highest version common to all members
// (Common) is what the cluster may move to once every member speaks it.
//
// The first release (1ca55cd) announces one version (protocol_version, 2) and refuses
// any other: a newer node presents the version the cluster runs at in that field, and
// its range in the fields protocol_min and protocol_max, which the first release
// ignores.

// ProtocolRange is a closed range of protocol versions, Min <= Max.
type ProtocolRange struct {
	Min, Max int
}

// String writes the range as "2" or "2-3".
func (r ProtocolRange) String() string {
	if r.Min == r.Max {
		return fmt.Sprint(r.Min)
	}
	return fmt.Sprintf("%d-%d", r.Min, r.Max)
}

// Contains reports whether v is in the range.
func (r ProtocolRange) Contains(v int) bool { return r.Min <= v && v <= r.Max }

// SpeakRange is the range of a node that presents version v: this build's range
// (MinProtocolVersion..MaxProtocolVersion) for its default version, or exactly v for a
// version a compatibility drill picked with --protocol-version.
func SpeakRange(v int) ProtocolRange {
	if v == ProtocolVersion {
		return ProtocolRange{MinProtocolVersion, MaxProtocolVersion}
	}
	return ProtocolRange{v, v}
}

// PeerRange is the range another node announced: min and max when it sent them, else
// (a first-release node, or an absurd pair) exactly version.
func PeerRange(version, min, max int) ProtocolRange {
	if min <= 0 || max < min {
		return ProtocolRange{version, version}
	}
	return ProtocolRange{min, max}
}

// Common returns the highest version that every range contains, or ErrIncompatible.
func Common(ranges ...ProtocolRange) (int, error) {
	if len(ranges) == 0 {
		return 0, fmt.Errorf("%w: no protocol range", ErrIncompatible)
	}
	lo, hi := ranges[0].Min, ranges[0].Max
	for _, r := range ranges[1:] {
		lo, hi = max(lo, r.Min), min(hi, r.Max)
	}
	if lo > hi {
		return 0, fmt.Errorf("%w: the protocol ranges %v have no version in common", ErrIncompatible, ranges)
	}
	return hi, nil
}

// CheckCompatible decides a join between this node, which speaks range mine, and
// another one, which speaks range theirs with state format theirState, into a cluster
// that runs at protocol version running (its master's). Both ranges must contain
// running, and the state formats must be equal; it returns the version the joined node
// speaks: running.
func CheckCompatible(mine, theirs ProtocolRange, running, theirState int) (int, error) {
	if theirState != StateFormat {
		return 0, fmt.Errorf("%w: this node has state format %d, the other node %d: upgrade the older one",
			ErrIncompatible, StateFormat, theirState)
	}
	if _, err := Common(mine, theirs); err != nil {
		return 0, fmt.Errorf("%w: this node speaks protocol %v, the other node protocol %v, with no version in common: upgrade the older one",
			ErrIncompatible, mine, theirs)
	}
	for _, r := range []ProtocolRange{mine, theirs} {
		if !r.Contains(running) {
			older := "the node"
			if r.Max < running {
				older = "the joining node, older than the cluster,"
			}
			return 0, fmt.Errorf("%w: the cluster runs protocol %d, and a node speaks %v (this node %v, the other %v): upgrade %s first",
				ErrIncompatible, running, r, mine, theirs, older)
		}
	}
	return running, nil
}
