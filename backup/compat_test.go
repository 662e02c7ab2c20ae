package backup

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden backup file in ../testdata")

// goldenPath is a backup written by format 1 of this package. It is never rewritten once
// released (only with -update while the format is still being made): a backup taken
// today must restore with every later pmgcm.
var goldenPath = filepath.Join("..", "testdata", "backup-format1.backup")

func TestFormat1StaysReadable(t *testing.T) {
	if *update {
		var buf bytes.Buffer
		w, err := NewWriter(&buf, Header{ClusterID: "0123abcd-4567-89ef", Index: 1234,
			Created: time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC), Entries: 2, WithMail: true, Mail: 1})
		if err != nil {
			t.Fatal(err)
		}
		_ = w.WriteEntry(Entry{Key: "mail/relay_domains", Value: []byte("example.com\n"), Version: 1200})
		_ = w.WriteEntry(Entry{Key: "spam/blob", Value: []byte{0, 1, 0xfe, 0xff}, Version: 1234})
		body := "From: a@example.net\r\nSubject: kept\r\n\r\nhello\r\n"
		_ = w.WriteMail([]byte(`{"id":"1-1","origin_cid":1,"from":"a@example.net","to":["b@example.com"],"subject":"kept","size":47,"state":"quarantined"}`),
			int64(len(body)), strings.NewReader(body))
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(goldenPath, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.Open(goldenPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	if h := r.Header(); h.Format != 1 || h.ClusterID != "0123abcd-4567-89ef" || h.Index != 1234 || h.Entries != 2 || h.Mail != 1 {
		t.Fatalf("header = %+v", h)
	}
	entries, bodies := readRecords(t, r)
	got := append(entries, "mail:"+strings.Join(bodies, ""))
	want := []string{"mail/relay_domains=example.com\n", "spam/blob=\x00\x01\xfe\xff", "mail:From: a@example.net\r\nSubject: kept\r\n\r\nhello\r\n"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("golden backup reads %q, want %q", got, want)
	}
}
