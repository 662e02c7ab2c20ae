package mailstore

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// recordSize reads the size of every record as a full decode does, whatever its
// strings hold (quotes, "size": in a subject or an address, escapes).
func TestRecordSize(t *testing.T) {
	nasty := []string{"", `"size":1,`, `x","size":7}`, `\"size\":9`, "size", `a"b`, "<&>\u2028", strings.Repeat(`"size":`, 3)}
	for i, s := range nasty {
		for _, purged := range []bool{false, true} {
			r := record{Meta: Meta{ID: "1-2", Origin: 1, Seq: 2, From: s, To: []string{s, "b@example.net"},
				Subject: s, Size: int64(1000*i + 17), SHA256: "ab", State: StateQuarantined,
				Received: time.Unix(1700000000, 0).UTC(), HaveBody: purged}, Purged: purged}
			v, err := json.Marshal(&r)
			if err != nil {
				t.Fatal(err)
			}
			n, err := recordSize(v)
			if err != nil || n != r.Size {
				t.Fatalf("recordSize(%s) = %d, %v; want %d", v, n, err, r.Size)
			}
		}
	}
	// Not the shape this code writes: decoded in full.
	for v, want := range map[string]int64{`{"size": 5}`: 5, `{"subject":"a","size" :1000}`: 1000, `{"id":"x"}`: 0} {
		if n, err := recordSize([]byte(v)); err != nil || n != want {
			t.Errorf("recordSize(%s) = %d, %v; want %d", v, n, err, want)
		}
	}
	if _, err := recordSize([]byte(`{"size":`)); err == nil {
		t.Error("recordSize of a truncated record: no error")
	}
}

// MissingTotals counts what Missing lists.
func TestMissingTotals(t *testing.T) {
	a, b := newStore(t, 1), newStore(t, 2)
	var want int64
	for i := 0; i < 5; i++ {
		m := accept(t, a, message("totals", 100+i))
		want += m.Size
	}
	replicate(t, a, b)
	list, err := b.Missing()
	if err != nil {
		t.Fatal(err)
	}
	n, size, err := b.MissingTotals()
	if err != nil || n != int64(len(list)) || n != 5 || size != want {
		t.Fatalf("MissingTotals = %d, %d, %v; Missing lists %d, want 5 of %d bytes", n, size, err, len(list), want)
	}
	copyBody(t, a, b, list[0].ID)
	if n, size, _ := b.MissingTotals(); n != 4 || size != want-list[0].Size {
		t.Fatalf("after one body: %d, %d; want 4, %d", n, size, want-list[0].Size)
	}
}

// FuzzRecordSize: whatever a record's strings hold, recordSize reads the size a full
// decode reads.
func FuzzRecordSize(f *testing.F) {
	f.Add("a@example.org", `"size":1,`, "b@example.net", int64(20480))
	f.Add(`\"size\":`, "}", `","size":3}`, int64(0))
	f.Fuzz(func(t *testing.T, from, subject, to string, size int64) {
		r := record{Meta: Meta{ID: "1-1", From: from, To: []string{to}, Subject: subject, Size: size}}
		v, err := json.Marshal(&r)
		if err != nil {
			t.Skip()
		}
		var full record
		if err := json.Unmarshal(v, &full); err != nil {
			t.Skip()
		}
		n, err := recordSize(v)
		if err != nil || n != full.Size {
			t.Fatalf("recordSize(%s) = %d, %v; a full decode reads %d", v, n, err, full.Size)
		}
	})
}
