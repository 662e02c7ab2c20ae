package fsm

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"time"
)

// EncodingVersion is the command encoding this node writes and reads: the
// first byte of every encoded command.
const EncodingVersion = 1

// CommandType identifies a command on the wire: the second byte of every
// encoded command. Values are never reused.
type CommandType uint8

// The command types. Append new types at the end; never renumber.
const (
	TypeCreateCluster CommandType = iota + 1
	TypeConfigSet
	TypeConfigDelete
	TypeAddMember
	TypeRemoveMember
	TypeSetSuffrage
	TypeSetJoinToken
	TypeSetEpoch
	TypeUpdateMember
	TypeRestoreConfig
	// TypeSetClusterVersion is of feature level 2 (version.LevelClusterVersion): a
	// master proposes it only once every member reports that level.
	TypeSetClusterVersion

	// maxCommandType is the highest type this node knows.
	maxCommandType = TypeSetClusterVersion
)

// String returns the command type's name, e.g. "ConfigSet".
func (t CommandType) String() string {
	switch t {
	case TypeCreateCluster:
		return "CreateCluster"
	case TypeConfigSet:
		return "ConfigSet"
	case TypeConfigDelete:
		return "ConfigDelete"
	case TypeAddMember:
		return "AddMember"
	case TypeRemoveMember:
		return "RemoveMember"
	case TypeSetSuffrage:
		return "SetSuffrage"
	case TypeSetJoinToken:
		return "SetJoinToken"
	case TypeSetEpoch:
		return "SetEpoch"
	case TypeUpdateMember:
		return "UpdateMember"
	case TypeRestoreConfig:
		return "RestoreConfig"
	case TypeSetClusterVersion:
		return "SetClusterVersion"
	}
	return fmt.Sprintf("CommandType(%d)", uint8(t))
}

// Command is a change to the replicated state. The concrete types are the
// value types of this file (CreateCluster, ConfigSet, ...); Decode returns
// values, and Encode accepts values or non-nil pointers to them.
type Command interface {
	// Type returns the command's wire type.
	Type() CommandType
}

// CreateCluster makes this node's Raft the founder of a new cluster. The
// founder must have CID 1 and be a voter. Existing config entries are kept.
type CreateCluster struct {
	ClusterID     string    `json:"cluster_id"`
	CreatedAt     time.Time `json:"created_at"`
	CACertPEM     []byte    `json:"ca_cert_pem"`
	CAKeyPEM      []byte    `json:"ca_key_pem"`
	JoinTokenSalt []byte    `json:"join_token_salt"`
	JoinTokenHash []byte    `json:"join_token_hash"`
	Founder       Member    `json:"founder"`
}

// ConfigSet writes a configuration entry. IfVersion nil writes
// unconditionally; a pointer to 0 writes only if the key is absent; any other
// value writes only if the entry's current version equals it.
type ConfigSet struct {
	Key       string  `json:"key"`
	Value     []byte  `json:"value"`
	IfVersion *uint64 `json:"if_version,omitempty"`
}

// ConfigDelete removes a configuration entry. IfVersion nil deletes
// unconditionally; otherwise the entry's current version (0 if absent) must
// equal *IfVersion. Deleting an absent key fails with ErrNotFound.
type ConfigDelete struct {
	Key       string  `json:"key"`
	IfVersion *uint64 `json:"if_version,omitempty"`
}

// AddMember adds a member. Member.CID must equal the cluster's NextCID.
type AddMember struct {
	Member Member `json:"member"`
}

// RemoveMember removes the member with the given CID. Its CID is never reused.
type RemoveMember struct {
	CID uint64 `json:"cid"`
}

// SetSuffrage changes a member's suffrage.
type SetSuffrage struct {
	CID      uint64   `json:"cid"`
	Suffrage Suffrage `json:"suffrage"`
}

// SetJoinToken replaces the join token hash (SHA-256, or empty to disable
// joins) and the salt the token was derived from.
type SetJoinToken struct {
	Hash []byte `json:"hash"`
	Salt []byte `json:"salt"`
}

// SetEpoch starts a new cluster epoch (forced recovery) and replaces the
// member list. Epoch must be greater than the current epoch, and every member
// must carry a CID that was already handed out.
type SetEpoch struct {
	Epoch   uint64   `json:"epoch"`
	Members []Member `json:"members"`
}

// RestoreConfig loads configuration entries from a backup into a standalone node (no
// cluster: a backup never carries cluster identity or members). With Reset the entries
// already there are dropped first, and watchers are told to reset. A large backup is
// restored in several commands, the first with Reset. Every entry gets the command's
// log index as its version.
type RestoreConfig struct {
	Reset   bool            `json:"reset"`
	Entries []RestoredEntry `json:"entries"`
}

// RestoredEntry is one entry of a RestoreConfig.
type RestoredEntry struct {
	Key   string `json:"key"`
	Value []byte `json:"value"`
}

// UpdateMember replaces the record of an existing member (same CID).
type UpdateMember struct {
	Member Member `json:"member"`
}

// Type implements Command.
func (CreateCluster) Type() CommandType { return TypeCreateCluster }

// Type implements Command.
func (ConfigSet) Type() CommandType { return TypeConfigSet }

// Type implements Command.
func (ConfigDelete) Type() CommandType { return TypeConfigDelete }

// Type implements Command.
func (AddMember) Type() CommandType { return TypeAddMember }

// Type implements Command.
func (RemoveMember) Type() CommandType { return TypeRemoveMember }

// Type implements Command.
func (SetSuffrage) Type() CommandType { return TypeSetSuffrage }

// Type implements Command.
func (SetJoinToken) Type() CommandType { return TypeSetJoinToken }

// Type implements Command.
func (SetEpoch) Type() CommandType { return TypeSetEpoch }

// Type implements Command.
func (UpdateMember) Type() CommandType { return TypeUpdateMember }

// Type returns TypeRestoreConfig.
func (RestoreConfig) Type() CommandType { return TypeRestoreConfig }

// newCommand returns a pointer to a zero command of type t, or nil if t is
// unknown.
func newCommand(t CommandType) any {
	switch t {
	case TypeCreateCluster:
		return new(CreateCluster)
	case TypeConfigSet:
		return new(ConfigSet)
	case TypeConfigDelete:
		return new(ConfigDelete)
	case TypeAddMember:
		return new(AddMember)
	case TypeRemoveMember:
		return new(RemoveMember)
	case TypeSetSuffrage:
		return new(SetSuffrage)
	case TypeSetJoinToken:
		return new(SetJoinToken)
	case TypeSetEpoch:
		return new(SetEpoch)
	case TypeUpdateMember:
		return new(UpdateMember)
	case TypeRestoreConfig:
		return new(RestoreConfig)
	case TypeSetClusterVersion:
		return new(SetClusterVersion)
	}
	return nil
}

// Encode returns the wire form of c: EncodingVersion, c.Type(), JSON body.
// It fails with ErrBadCommand for a nil command or a type not of this package.
func Encode(c Command) ([]byte, error) {
	if c == nil {
		return nil, fmt.Errorf("%w: nil command", ErrBadCommand)
	}
	switch cs := c.(type) { // the hot command's direct encoder (fastcodec.go)
	case *ConfigSet:
		if cs != nil {
			if b, ok := encodeConfigSet(cs); ok {
				return b, nil
			}
		}
	case ConfigSet:
		if b, ok := encodeConfigSet(&cs); ok {
			return b, nil
		}
	}
	rv := reflect.ValueOf(c)
	if rv.Kind() == reflect.Pointer {
		if rv.IsNil() {
			return nil, fmt.Errorf("%w: nil %T", ErrBadCommand, c)
		}
		rv = rv.Elem()
	}
	t := c.Type()
	zero := newCommand(t)
	if zero == nil || reflect.TypeOf(zero).Elem() != rv.Type() {
		return nil, fmt.Errorf("%w: %T is not a command of this package", ErrBadCommand, c)
	}
	body, err := json.Marshal(rv.Interface())
	if err != nil {
		return nil, fmt.Errorf("%w: encode %s: %v", ErrBadCommand, t, err)
	}
	out := make([]byte, 0, 2+len(body))
	out = append(out, EncodingVersion, byte(t))
	return append(out, body...), nil
}

// Decode parses the wire form of a command and returns the command as a value
// (e.g. ConfigSet, not *ConfigSet). An unknown encoding version or command
// type gives an error wrapping ErrUnknownCommand; a truncated or malformed
// body (including unknown JSON fields) gives one wrapping ErrBadCommand.
// Decode never panics.
func Decode(b []byte) (Command, error) {
	if len(b) < 2 {
		return nil, fmt.Errorf("%w: %d bytes, too short for a command header", ErrBadCommand, len(b))
	}
	ver, t := b[0], CommandType(b[1])
	if ver != EncodingVersion {
		return nil, fmt.Errorf("%w: command encoding v%d unknown to this node (it reads encoding v%d): upgrade pmgclusterd",
			ErrUnknownCommand, ver, EncodingVersion)
	}
	ptr := newCommand(t)
	if ptr == nil {
		return nil, fmt.Errorf("%w: command type %d (encoding v%d) unknown to this node (it knows types 1-%d): upgrade pmgclusterd",
			ErrUnknownCommand, uint8(t), ver, uint8(maxCommandType))
	}
	body := bytes.TrimLeft(b[2:], " \t\r\n")
	if t == TypeConfigSet {
		if c, ok := decodeConfigSet(body); ok { // the canonical form, directly (fastcodec.go)
			return c, nil
		}
	}
	if len(body) == 0 || body[0] != '{' {
		return nil, fmt.Errorf("%w: %s: body is not a JSON object", ErrBadCommand, t)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(ptr); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadCommand, t, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: %s: trailing data after the JSON body", ErrBadCommand, t)
	}
	return reflect.ValueOf(ptr).Elem().Interface().(Command), nil
}
