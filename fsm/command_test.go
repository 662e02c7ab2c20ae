package fsm

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// allCommands has one populated command of every type.
func allCommands() []Command {
	return []Command{
		createCmd(),
		ConfigSet{Key: "mail/relay", Value: []byte{0, 1, 2, 0xff}},
		ConfigSet{Key: "a", Value: []byte{}, IfVersion: u64(0)},
		ConfigSet{Key: "a", IfVersion: u64(42)},
		ConfigDelete{Key: "mail/relay"},
		ConfigDelete{Key: "mail/relay", IfVersion: u64(7)},
		AddMember{Member: member(2)},
		RemoveMember{CID: 3},
		SetSuffrage{CID: 2, Suffrage: Nonvoter},
		SetJoinToken{Hash: tokenHash("t"), Salt: []byte{1, 2}},
		SetJoinToken{},
		SetEpoch{Epoch: 2, Members: []Member{member(1), member(3)}},
		SetEpoch{Epoch: 3, Members: []Member{}},
		UpdateMember{Member: member(4)},
		RestoreConfig{Reset: true, Entries: []RestoredEntry{{Key: "k", Value: []byte{0, 9}}}},
		SetClusterVersion{Version: 2},
	}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	seen := map[CommandType]bool{}
	for _, c := range allCommands() {
		b, err := Encode(c)
		if err != nil {
			t.Fatalf("Encode(%#v): %v", c, err)
		}
		if b[0] != EncodingVersion || CommandType(b[1]) != c.Type() {
			t.Fatalf("header = %v, want [%d %d]", b[:2], EncodingVersion, c.Type())
		}
		got, err := Decode(b)
		if err != nil {
			t.Fatalf("Decode(Encode(%#v)): %v", c, err)
		}
		if !reflect.DeepEqual(got, c) {
			t.Fatalf("round trip:\n got %#v\nwant %#v", got, c)
		}
		seen[c.Type()] = true
	}
	for typ := CommandType(1); typ <= maxCommandType; typ++ {
		if !seen[typ] {
			t.Errorf("no round-trip case for %s", typ)
		}
	}
}

func TestEncodePointer(t *testing.T) {
	c := ConfigSet{Key: "k", Value: []byte("v")}
	a, err := Encode(&c)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Encode(c)
	if !bytes.Equal(a, b) {
		t.Fatalf("pointer and value encode differently")
	}
	got, _ := Decode(a)
	if _, ok := got.(ConfigSet); !ok {
		t.Fatalf("Decode returned %T, want ConfigSet", got)
	}
}

type foreign struct{}

func (foreign) Type() CommandType { return TypeConfigSet }

type unknownType struct{}

func (unknownType) Type() CommandType { return 200 }

func TestEncodeErrors(t *testing.T) {
	for _, c := range []Command{nil, (*ConfigSet)(nil), foreign{}, unknownType{}} {
		if _, err := Encode(c); !errors.Is(err, ErrBadCommand) {
			t.Errorf("Encode(%#v) = %v, want ErrBadCommand", c, err)
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name string
		data []byte
		err  error
		msg  string
	}{
		{"nil", nil, ErrBadCommand, "too short"},
		{"one byte", []byte{1}, ErrBadCommand, "too short"},
		{"unknown version", []byte{2, 1, '{', '}'}, ErrUnknownCommand, "encoding v2 unknown to this node (it reads encoding v1): upgrade pmgclusterd"},
		{"unknown type", []byte{1, 77, '{', '}'}, ErrUnknownCommand, "command type 77 (encoding v1) unknown to this node (it knows types 1-11): upgrade pmgclusterd"},
		{"type zero", []byte{1, 0, '{', '}'}, ErrUnknownCommand, "command type 0"},
		{"no body", []byte{1, 2}, ErrBadCommand, "not a JSON object"},
		{"null body", []byte("\x01\x02null"), ErrBadCommand, "not a JSON object"},
		{"array body", []byte("\x01\x02[]"), ErrBadCommand, "not a JSON object"},
		{"truncated", []byte("\x01\x02{\"key\":\"a"), ErrBadCommand, "ConfigSet"},
		{"trailing", []byte("\x01\x02{}{}"), ErrBadCommand, "trailing"},
		{"trailing garbage", []byte("\x01\x02{} x"), ErrBadCommand, "trailing"},
		{"unknown field", []byte("\x01\x02{\"key\":\"a\",\"ttl\":5}"), ErrBadCommand, "unknown field"},
		{"wrong field type", []byte("\x01\x05{\"cid\":\"one\"}"), ErrBadCommand, "RemoveMember"},
		{"negative cid", []byte("\x01\x05{\"cid\":-1}"), ErrBadCommand, ""},
		{"bad base64", []byte("\x01\x07{\"hash\":\"!!\"}"), ErrBadCommand, ""},
		{"bad time", []byte("\x01\x01{\"created_at\":\"yesterday\"}"), ErrBadCommand, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Decode(tt.data)
			if !errors.Is(err, tt.err) || c != nil {
				t.Fatalf("Decode = %#v, %v; want %v", c, err, tt.err)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("err = %q, want it to contain %q", err, tt.msg)
			}
		})
	}
}

func TestDecodeAcceptsWhitespace(t *testing.T) {
	c, err := Decode([]byte("\x01\x05 \n{\"cid\": 3} \n"))
	if err != nil || c != (RemoveMember{CID: 3}) {
		t.Fatalf("Decode = %#v, %v", c, err)
	}
}

func TestCommandTypeString(t *testing.T) {
	if s := TypeSetEpoch.String(); s != "SetEpoch" {
		t.Fatalf("String = %q", s)
	}
	if s := CommandType(77).String(); s != "CommandType(77)" {
		t.Fatalf("String = %q", s)
	}
}
