package backup

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

func sample(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := NewWriter(&buf, Header{ClusterID: "c1", Index: 42, Created: time.Unix(1e9, 0).UTC(), Entries: 2, WithMail: true, Mail: 1})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range []Entry{{Key: "a", Value: []byte("1\n"), Version: 40}, {Key: "b/c", Value: []byte{0, 0xff}, Version: 42}} {
		if err := w.WriteEntry(e); err != nil {
			t.Fatal(err)
		}
	}
	body := "Subject: hi\r\n\r\nbody\n\x00"
	if err := w.WriteMail(json.RawMessage(`{"id":"1-1"}`), int64(len(body)), strings.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestRoundTrip(t *testing.T) {
	b := sample(t)
	r, err := NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if h := r.Header(); h.ClusterID != "c1" || h.Index != 42 || h.Entries != 2 || h.Format != Format || !h.WithMail {
		t.Fatalf("header = %+v", h)
	}
	keys, bodies := readRecords(t, r)
	if strings.Join(keys, ",") != "a=1\n,b/c=\x00\xff" || len(bodies) != 1 || bodies[0] != "Subject: hi\r\n\r\nbody\n\x00" {
		t.Fatalf("keys %q bodies %q", keys, bodies)
	}
}

// TestEveryCutAndFlipIsRefused: a backup cut at any byte, or with any byte altered, is
// never taken as valid.
func TestEveryCutAndFlipIsRefused(t *testing.T) {
	b := sample(t)
	if _, err := Verify(bytes.NewReader(b)); err != nil {
		t.Fatalf("intact backup refused: %v", err)
	}
	for n := 0; n < len(b); n++ {
		if _, err := Verify(bytes.NewReader(b[:n])); err == nil {
			t.Fatalf("backup cut at byte %d of %d was accepted", n, len(b))
		}
	}
	for i := range b {
		c := bytes.Clone(b)
		c[i] ^= 0x01
		if _, err := Verify(bytes.NewReader(c)); err == nil {
			t.Fatalf("backup with byte %d flipped was accepted", i)
		}
	}
	if _, err := Verify(bytes.NewReader(append(bytes.Clone(b), 'x'))); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("data after the trailer: %v", err)
	}
}

func TestNewerAndForeign(t *testing.T) {
	b := sample(t)
	newer := bytes.Replace(b, []byte(`"format":1`), []byte(`"format":2`), 1)
	if _, err := NewReader(bytes.NewReader(newer)); !errors.Is(err, ErrNewer) || !strings.Contains(err.Error(), "format 2") {
		t.Fatalf("newer format: %v", err)
	}
	for _, in := range []string{"", "hello\n", `{"kind":"other"}` + "\n"} {
		if _, err := NewReader(strings.NewReader(in)); !errors.Is(err, ErrNotBackup) {
			t.Fatalf("%q: %v", in, err)
		}
	}
}

// readRecords reads r to its end: the entries as "key=value", the mail bodies.
func readRecords(t *testing.T, r *Reader) (entries, bodies []string) {
	t.Helper()
	for {
		rec, err := r.Next()
		if errors.Is(err, io.EOF) {
			return entries, bodies
		}
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case rec.Entry != nil:
			entries = append(entries, rec.Entry.Key+"="+string(rec.Entry.Value))
		case rec.Mail != nil:
			body, err := io.ReadAll(rec.Body)
			if err != nil {
				t.Fatal(err)
			}
			bodies = append(bodies, string(body))
		}
	}
}
