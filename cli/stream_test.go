package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/api"
)

// The fake's streaming lists hand out what its whole lists hold, and record the same calls.

func (f *fakeAPI) ConfigListEach(ctx context.Context, prefix string, opts ReadOptions, fn func(api.ConfigEntry) error) (ReadInfo, error) {
	l, ri, err := f.ConfigList(ctx, prefix, opts)
	if err != nil {
		return ReadInfo{}, err
	}
	if l != nil {
		for _, e := range l.Entries {
			if err := fn(e); err != nil {
				return ReadInfo{}, err
			}
		}
	}
	return ri, nil
}

func (f *fakeAPI) QuarantineListEach(ctx context.Context, from, to, state string, fn func(api.QuarantineMessage) error) error {
	msgs, err := f.QuarantineList(ctx, from, to, state)
	if err != nil {
		return err
	}
	for _, m := range msgs {
		if err := fn(m); err != nil {
			return err
		}
	}
	return nil
}

// TestJSONArrayWriterMatchesWriteJSON: the streamed JSON of -o json is byte for byte what
// writeJSON prints for the whole slice, empty or not, with characters HTML would escape.
func TestJSONArrayWriterMatchesWriteJSON(t *testing.T) {
	v := "a <b> & \"c\"\n"
	cases := map[string][]any{
		"empty": {},
		"one":   {api.ConfigEntry{Key: "k", Version: 1, Size: len(v), Value: &v}},
		"three": {
			api.ConfigEntry{Key: "a", Version: 1, Size: 1, ValueBase64: "/w=="},
			api.QuarantineMessage{ID: "x", To: []string{"a@b", "c@d"}, Subject: "<hi>", Received: time.Unix(1, 0).UTC()},
			map[string]int{"n": 3},
		},
	}
	for name, items := range cases {
		var want, got bytes.Buffer
		if err := writeJSON(&want, items); err != nil {
			t.Fatal(err)
		}
		aw := newJSONArrayWriter(&got)
		for _, it := range items {
			if err := aw.add(it); err != nil {
				t.Fatal(err)
			}
		}
		if err := aw.close(); err != nil {
			t.Fatal(err)
		}
		if got.String() != want.String() {
			t.Errorf("%s: streamed\n%s\nwant\n%s", name, got.String(), want.String())
		}
	}
}

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
