package client

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/pmgcm/pmgcm/api"
)

// TestDecodeArrayObject: the stream decoders take what json.Unmarshal takes (null as an
// empty list, unknown fields skipped) and refuse a truncated answer.
func TestDecodeArrayObject(t *testing.T) {
	decodeList := func(s string) ([]string, error) {
		dec := json.NewDecoder(strings.NewReader(s))
		var keys []string
		err := decodeObject(dec, func(key string) error {
			if key != "entries" {
				var skip json.RawMessage
				return dec.Decode(&skip)
			}
			return decodeArray(dec, func() error {
				var e api.ConfigEntry
				if err := dec.Decode(&e); err != nil {
					return err
				}
				keys = append(keys, e.Key)
				return nil
			})
		})
		return keys, err
	}
	for _, tc := range []struct {
		in   string
		want string
		ok   bool
	}{
		{`{"entries":[{"key":"a"},{"key":"b"}]}` + "\n", "a,b", true},
		{`{"entries":[]}`, "", true},
		{`{"entries":null}`, "", true},
		{`{"later":{"x":[1,2]},"entries":[{"key":"a"}],"more":1}`, "a", true},
		{`{"entries":[{"key":"a"},{"ke`, "", false},
		{`{"entries":[{"key":"a"}`, "", false},
		{`[]`, "", false},
	} {
		keys, err := decodeList(tc.in)
		if (err == nil) != tc.ok || (tc.ok && strings.Join(keys, ",") != tc.want) {
			t.Errorf("%s: keys %v, err %v; want %q ok=%v", tc.in, keys, err, tc.want, tc.ok)
		}
	}
	stop := errors.New("stop")
	dec := json.NewDecoder(strings.NewReader(`[1,2,3]`))
	n := 0
	err := decodeArray(dec, func() error {
		var x int
		if err := dec.Decode(&x); err != nil {
			return err
		}
		if n++; n == 2 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || n != 2 {
		t.Fatalf("a callback's error: %v after %d", err, n)
	}
}
