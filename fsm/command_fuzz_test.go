package fsm

import (
	"bytes"
	"errors"
	"testing"

	"github.com/hashicorp/raft"
)

// FuzzDecode checks that Decode never panics, that it only fails with
// ErrBadCommand or ErrUnknownCommand, that whatever it accepts re-encodes to
// a stable form, and that Apply of any input returns a *Result.
func FuzzDecode(f *testing.F) {
	for _, c := range allCommands() {
		b, err := Encode(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{1, 77, '{', '}'})
	f.Add([]byte("\x01\x02{\"key\":\"a\",\"value\":null,\"if_version\":0}"))
	f.Add([]byte("\x01\x01{\"created_at\":\"2025-01-01T00:00:00+23:59\",\"founder\":{\"cid\":1}}"))

	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Decode(b)
		if err != nil {
			if c != nil {
				t.Fatalf("Decode returned %#v with error %v", c, err)
			}
			if !errors.Is(err, ErrBadCommand) && !errors.Is(err, ErrUnknownCommand) {
				t.Fatalf("Decode error %v wraps no sentinel", err)
			}
		} else {
			if c.Type() != CommandType(b[1]) {
				t.Fatalf("Decode gave %s for type byte %d", c.Type(), b[1])
			}
			enc, err := Encode(c)
			if err != nil {
				t.Fatalf("Encode(Decode(b)) = %v for %#v", err, c)
			}
			c2, err := Decode(enc)
			if err != nil {
				t.Fatalf("Decode(Encode(Decode(b))) = %v", err)
			}
			enc2, err := Encode(c2)
			if err != nil || !bytes.Equal(enc, enc2) {
				t.Fatalf("re-encoding is not stable:\n%q\n%q (%v)", enc, enc2, err)
			}
		}
		fsm := New()
		res, ok := fsm.Apply(&raft.Log{Type: raft.LogCommand, Index: 1, Data: b}).(*Result)
		if !ok || res == nil || (err != nil && res.Err == nil) {
			t.Fatalf("Apply = %#v, %v", res, ok)
		}
	})
}
