package fsm

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

const (
	// MaxKeyLen is the maximum length of a configuration key, in bytes.
	MaxKeyLen = 256
	// MaxValueLen is the maximum length of a configuration value, in bytes.
	MaxValueLen = 1 << 20
	// MaxStateBytes bounds the configuration store: the sum of len(key) +
	// len(value) over the entries, plus len(key) over the tombstones. A
	// ConfigSet that would take the store over it fails with ErrTooLarge.
	MaxStateBytes = 256 << 20

	// maxNameLen bounds member names, fingerprints and the cluster ID, and
	// maxPEMLen the CA certificate and key, so that every record Apply accepts
	// fits in a snapshot line (see maxSnapshotLine).
	maxNameLen = 256
	maxPEMLen  = 64 << 10
)

// stateBytesLimit is MaxStateBytes; tests lower it.
var stateBytesLimit int64 = MaxStateBytes

// Cluster is the cluster identity; nil until a CreateCluster command is
// applied (a standalone node runs a one-voter Raft with no cluster identity
// but with config entries).
type Cluster struct {
	ID        string    `json:"id"`
	CreatedAt time.Time `json:"created_at"`
	Epoch     uint64    `json:"epoch"`
	CACertPEM []byte    `json:"ca_cert_pem"`
	// CAKeyPEM is the cluster CA key. It is replicated so any master can sign
	// joining nodes (as Consul's built-in CA does).
	CAKeyPEM []byte `json:"ca_key_pem"`
	// JoinTokenSalt is the salt the join token is derived from (with the CA
	// key), so any member can print the token again; opaque to this package.
	JoinTokenSalt []byte `json:"join_token_salt"`
	// JoinTokenHash is the SHA-256 of the join token; empty means joins are
	// disabled.
	JoinTokenHash []byte `json:"join_token_hash"`
	// NextCID is the CID the next added member gets. CIDs are never reused.
	NextCID uint64 `json:"next_cid"`
	// Version is the cluster version as the master last recorded it (SetClusterVersion):
	// the lowest feature level among the members. 0 means never recorded: the cluster
	// is at level 1 (see EffectiveVersion). Omitted when 0, so that the snapshots of a
	// cluster that never recorded one are those release 0.1.0 reads.
	Version int `json:"version,omitempty"`
}

// EffectiveVersion returns the cluster version: Version, or level 1 (release 0.1.0)
// when none was recorded.
func (c *Cluster) EffectiveVersion() int {
	if c == nil || c.Version == 0 {
		return LevelRelease010
	}
	return c.Version
}

// clone returns a deep copy of c.
func (c *Cluster) clone() *Cluster {
	if c == nil {
		return nil
	}
	cp := *c
	cp.CACertPEM = bytes.Clone(c.CACertPEM)
	cp.CAKeyPEM = bytes.Clone(c.CAKeyPEM)
	cp.JoinTokenSalt = bytes.Clone(c.JoinTokenSalt)
	cp.JoinTokenHash = bytes.Clone(c.JoinTokenHash)
	return &cp
}

// Suffrage says whether a member votes in Raft elections.
type Suffrage string

const (
	// Voter is a member that votes and may become leader.
	Voter Suffrage = "voter"
	// Nonvoter is a member that receives the log but does not vote.
	Nonvoter Suffrage = "nonvoter"
)

// Valid reports whether s is Voter or Nonvoter.
func (s Suffrage) Valid() bool { return s == Voter || s == Nonvoter }

// Member is one node of the cluster.
type Member struct {
	CID  uint64 `json:"cid"`
	Name string `json:"name"`
	IP   string `json:"ip"`
	Port int    `json:"port"`
	// Fingerprint is the SHA-256 of the node certificate, "AA:BB:...".
	Fingerprint string    `json:"fingerprint"`
	Suffrage    Suffrage  `json:"suffrage"`
	JoinedAt    time.Time `json:"joined_at"`
	// Epoch is the cluster epoch in which the member was last admitted. A forced
	// promotion starts a new epoch with only the promoted node in it: members left in an
	// older epoch are fenced until `pmgcm sync` re-admits them.
	Epoch uint64 `json:"epoch,omitempty"`
}

// Fenced reports whether m was left behind by a forced promotion to clusterEpoch.
func (m Member) Fenced(clusterEpoch uint64) bool { return m.Epoch < clusterEpoch }

// Entry is one configuration key/value entry. Version is the Raft log index
// of its last change.
type Entry struct {
	Key     string `json:"key"`
	Value   []byte `json:"value"`
	Version uint64 `json:"version"`
}

// ValidateKey reports whether key is a valid configuration key: non-empty,
// at most MaxKeyLen bytes, printable ASCII without spaces, made of
// '/'-separated non-empty segments (no leading, trailing or doubled '/'),
// none of them "." or "..", so that a key is also a safe relative file path.
// The error wraps ErrInvalidKey.
func ValidateKey(key string) error {
	if err := validateKeySyntax(key); err != nil {
		return err
	}
	for seg := range strings.SplitSeq(key, "/") {
		if seg == "." || seg == ".." {
			return fmt.Errorf("%w: %q: path segment %q is not allowed", ErrInvalidKey, key, seg)
		}
	}
	return nil
}

// validateKeySyntax checks the rules of ValidateKey except the ban on "." and
// ".." segments, which came later: keys that pass it may exist in the state
// (written before the ban), so Restore accepts them and ConfigDelete may
// remove them, while ConfigSet refuses to create new ones.
func validateKeySyntax(key string) error {
	if key == "" {
		return fmt.Errorf("%w: empty key", ErrInvalidKey)
	}
	if len(key) > MaxKeyLen {
		return fmt.Errorf("%w: key is %d bytes, the limit is %d", ErrInvalidKey, len(key), MaxKeyLen)
	}
	for i := 0; i < len(key); i++ {
		if c := key[i]; c <= ' ' || c > '~' {
			return fmt.Errorf("%w: %q: byte %d (0x%02x) is not printable ASCII without spaces", ErrInvalidKey, key, i, c)
		}
	}
	if key[0] == '/' || key[len(key)-1] == '/' || strings.Contains(key, "//") {
		return fmt.Errorf("%w: %q: empty path segment (leading, trailing or doubled '/')", ErrInvalidKey, key)
	}
	return nil
}

// validateValue checks the size of a configuration value.
func validateValue(v []byte) error {
	if len(v) > MaxValueLen {
		return fmt.Errorf("%w: value is %d bytes, the limit is %d", ErrTooLarge, len(v), MaxValueLen)
	}
	return nil
}

// validateJoinToken accepts an empty hash (joins disabled) or a SHA-256, and
// a salt of at most maxNameLen bytes.
func validateJoinToken(hash, salt []byte) error {
	if len(hash) != 0 && len(hash) != sha256.Size {
		return fmt.Errorf("%w: join token hash is %d bytes, want %d (SHA-256) or 0", ErrBadCommand, len(hash), sha256.Size)
	}
	if len(salt) > maxNameLen {
		return fmt.Errorf("%w: join token salt is %d bytes, the limit is %d", ErrBadCommand, len(salt), maxNameLen)
	}
	return nil
}

// validateMember checks the fields of a member record. The error wraps
// ErrBadCommand.
func validateMember(m Member) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: member %d: %s", ErrBadCommand, m.CID, fmt.Sprintf(format, args...))
	}
	switch {
	case m.CID == 0:
		return bad("cid must be positive")
	case m.Name == "":
		return bad("empty name")
	case len(m.Name) > maxNameLen:
		return bad("name is %d bytes, the limit is %d", len(m.Name), maxNameLen)
	case len(m.Fingerprint) > maxNameLen:
		return bad("fingerprint is %d bytes, the limit is %d", len(m.Fingerprint), maxNameLen)
	case len(m.IP) > maxNameLen:
		return bad("ip is %d bytes, the limit is %d", len(m.IP), maxNameLen)
	case m.Port < 1 || m.Port > 65535:
		return bad("port %d out of range 1-65535", m.Port)
	case m.Fingerprint == "":
		return bad("empty certificate fingerprint")
	case !m.Suffrage.Valid():
		return bad("suffrage %q is neither %q nor %q", m.Suffrage, Voter, Nonvoter)
	}
	if _, err := netip.ParseAddr(m.IP); err != nil {
		return bad("ip %q is not an IP address", m.IP)
	}
	return nil
}

// sameIP reports whether two member IPs name the same address.
func sameIP(a, b string) bool {
	pa, errA := netip.ParseAddr(a)
	pb, errB := netip.ParseAddr(b)
	if errA != nil || errB != nil {
		return a == b
	}
	return pa.Unmap() == pb.Unmap()
}

// Conflict reports why m clashes with other (same name, IP or fingerprint), or "" if it
// does not: the check AddMember makes, for a caller that refuses before it proposes.
func Conflict(m, other Member) string { return conflict(m, other) }

// conflict reports why m clashes with other (same name, IP or fingerprint),
// or "" if it does not. Names and fingerprints compare case-insensitively.
func conflict(m, other Member) string {
	switch {
	case strings.EqualFold(m.Name, other.Name):
		return fmt.Sprintf("name %q is taken by member %d", m.Name, other.CID)
	case sameIP(m.IP, other.IP):
		return fmt.Sprintf("ip %s is taken by member %d", m.IP, other.CID)
	case strings.EqualFold(m.Fingerprint, other.Fingerprint):
		return fmt.Sprintf("fingerprint %s is taken by member %d", m.Fingerprint, other.CID)
	}
	return ""
}
