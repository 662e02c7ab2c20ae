package fsm

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
)

// slowDecode is Decode through encoding/json only, as a node without the fast path does.
func slowDecode(b []byte) (Command, error) {
	body := bytes.TrimLeft(b[2:], " \t\r\n")
	if len(body) == 0 || body[0] != '{' {
		return nil, errors.New("not an object")
	}
	var c ConfigSet
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("trailing data")
	}
	return c, nil
}

func slowEncode(c ConfigSet) []byte {
	body, err := json.Marshal(c)
	if err != nil {
		panic(err)
	}
	return append([]byte{EncodingVersion, byte(TypeConfigSet)}, body...)
}

// TestConfigSetFastCodec: the direct ConfigSet encoder writes the bytes json.Marshal
// writes, for keys and values of every kind, and Decode of them gives what encoding/json
// gives, pointer or value, nil or empty value, with and without if_version.
func TestConfigSetFastCodec(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	v0, v1, vmax := uint64(0), uint64(7), ^uint64(0)
	cases := []ConfigSet{
		{Key: "a", Value: []byte("v")},
		{Key: "bench/conc/1/2", Value: make([]byte, 256)},
		{Key: "k", Value: nil},
		{Key: "k", Value: []byte{}},
		{Key: "k", Value: []byte("x"), IfVersion: &v0},
		{Key: "k", Value: []byte("xy"), IfVersion: &v1},
		{Key: "k", Value: []byte("xyz"), IfVersion: &vmax},
		{Key: "", Value: []byte("e")},
		{Key: "<html>&\"\\quote", Value: []byte("escaped key")},
		{Key: "ключ", Value: []byte("non-ASCII key")},
		{Key: "tab\tkey", Value: []byte("control byte")},
	}
	for i := 0; i < 500; i++ {
		key := make([]byte, r.IntN(20))
		for j := range key {
			key[j] = byte(r.IntN(128))
		}
		val := make([]byte, r.IntN(70))
		for j := range val {
			val[j] = byte(r.IntN(256))
		}
		c := ConfigSet{Key: string(key), Value: val}
		if r.IntN(3) == 0 {
			v := r.Uint64() >> r.IntN(64)
			c.IfVersion = &v
		}
		cases = append(cases, c)
	}
	for _, c := range cases {
		want := slowEncode(c)
		for _, in := range []Command{c, &c} {
			got, err := Encode(in)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("Encode(%#v) = %q, %v; json.Marshal gives %q", in, got, err, want)
			}
		}
		got, err := Decode(want)
		if err != nil {
			t.Fatalf("Decode(%q): %v", want, err)
		}
		slow, err := slowDecode(want)
		if err != nil {
			t.Fatalf("encoding/json decode of %q: %v", want, err)
		}
		if !reflect.DeepEqual(got, slow) {
			t.Fatalf("Decode(%q) = %#v, encoding/json gives %#v", want, got, slow)
		}
		if fast, ok := decodeConfigSet(want[2:]); ok && cap(fast.Value) != len(fast.Value) {
			t.Fatalf("Decode(%q): a value of %d bytes in a buffer of %d", want, len(fast.Value), cap(fast.Value))
		} else if !ok && c.Value != nil && strings.IndexFunc(c.Key, func(r rune) bool { return r > '~' || !plainKeyByte(byte(r)) }) < 0 {
			t.Fatalf("Decode(%q) did not take the direct path", want)
		}
	}
}

// TestConfigSetFastDecodeDefers: input off the canonical form goes to encoding/json,
// which accepts or refuses it as before.
func TestConfigSetFastDecodeDefers(t *testing.T) {
	for _, body := range []string{
		`{"key":"a","value":"dg=="}`,
		`{"key":"a","value":"dg==","if_version":01}`,
		`{"key":"a","value":"dg==","if_version":18446744073709551616}`,
		`{"key":"a","value":"d"}`,
		`{"key":"a","value":"dg=="} `,
		`{"key":"a","value":"dg==","x":1}`,
		`{"KEY":"a","value":"dg=="}`,
		`{"key":"a","value":"dg==","if_version":1,"if_version":2}`,
		`{"key":"a\u0041","value":"dg=="}`,
		`{"key":"a","value":"dg==","if_version":-1}`,
		`{"key":"a","value":"dg==","if_version":1.0}`,
		`{"key":"a","value":"dg==`,
		`{"key":"a`,
		`{"value":"dg==","key":"a"}`,
		`{"key":"a","value":"d=g="}`,
		`{"key":"a","value":"===="}`,
		`{"key":"a","value":"dg=a"}`,
		`{"key":"a","value":"dgA="}`,
		`{"key":"a","value":"dgB="}`,
		`{"key":"a","value":""}`,
	} {
		b := append([]byte{EncodingVersion, byte(TypeConfigSet)}, body...)
		got, err := Decode(b)
		slow, serr := slowDecode(b)
		if (err == nil) != (serr == nil) || (err == nil && !reflect.DeepEqual(got, slow)) {
			t.Errorf("Decode(%s) = %#v, %v; encoding/json gives %#v, %v", body, got, err, slow, serr)
		}
	}
}

// FuzzConfigSetFastDecode: whatever the ConfigSet decoder accepts, encoding/json accepts
// with the same result, and what it refuses, encoding/json refuses.
func FuzzConfigSetFastDecode(f *testing.F) {
	f.Add([]byte(`{"key":"a","value":"dg=="}`))
	f.Add([]byte(`{"key":"a","value":"","if_version":0}`))
	f.Add([]byte(`{"key":"a","value":"dg==","if_version":18446744073709551615}`))
	f.Add([]byte(`{"key":"a","value":null}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		b := append([]byte{EncodingVersion, byte(TypeConfigSet)}, body...)
		got, err := Decode(b)
		slow, serr := slowDecode(b)
		if (err == nil) != (serr == nil) {
			t.Fatalf("Decode(%q): %v; encoding/json: %v", body, err, serr)
		}
		if err == nil && !reflect.DeepEqual(got, slow) {
			t.Fatalf("Decode(%q) = %#v; encoding/json gives %#v", body, got, slow)
		}
	})
}
