package cli

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/api/client"
)

// The fake's streaming lists hand out what its whole lists hold, and record the same calls.

func (f *fakeAPI) ConfigListEach(ctx context.Context, prefix string, opts client.ReadOptions, fn func(api.ConfigEntry) error) (client.ReadInfo, error) {
	l, ri, err := f.ConfigList(ctx, prefix, opts)
	if err != nil {
		return client.ReadInfo{}, err
	}
	if l != nil {
		for _, e := range l.Entries {
			if err := fn(e); err != nil {
				return client.ReadInfo{}, err
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
