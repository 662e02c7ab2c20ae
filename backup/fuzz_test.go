package backup

import (
	"bytes"
	"errors"
	"io"
	"os"
	"testing"
)

// FuzzReader checks that the backup Reader never panics on any input, fails only with
// its sentinel errors (or an I/O error, of which a bytes.Reader has none), and that a
// file it accepts whole reads the same again: the reader of a file an operator or an
// attacker hands to restore and backup --inspect.
func FuzzReader(f *testing.F) {
	body := "Subject: hi\r\n\r\nhello\r\n"
	if b, err := os.ReadFile(goldenPath); err == nil {
		f.Add(b)
	}
	seeds := [][]byte{
		craftF(f, []Entry{{Key: "a", Value: []byte("1")}, {Key: "b/c", Value: []byte{0, 0xff}}}, []testMail{{goodMeta("1-1", body), body}}),
		craftF(f, []Entry{{Key: "bad key", Value: []byte("1")}}, nil),
		craftF(f, nil, []testMail{{goodMeta("1-1", "x"), body}}),
		craftF(f, nil, []testMail{{`"str"`, body}}),
		[]byte(""),
		[]byte(`{"kind":"pmgcm-backup","format":1}` + "\n"),
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := Verify(bytes.NewReader(b))
		if err != nil {
			if !errors.Is(err, ErrNotBackup) && !errors.Is(err, ErrNewer) && !errors.Is(err, ErrCorrupt) &&
				!errors.Is(err, ErrTruncated) && !errors.Is(err, ErrInvalid) {
				t.Fatalf("Verify error %v wraps no sentinel", err)
			}
			return
		}
		r, err := NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("accepted by Verify, refused by NewReader: %v", err)
		}
		if r.Header() != h {
			t.Fatalf("header %+v, then %+v", h, r.Header())
		}
		entries, mail := 0, 0
		for {
			rec, err := r.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("accepted by Verify, then %v", err)
			}
			switch {
			case rec.Entry != nil:
				entries++
			case rec.Mail != nil:
				if rec.Message == nil {
					t.Fatal("a message without its checked metadata")
				}
				if _, err := io.Copy(io.Discard, rec.Body); err != nil {
					t.Fatal(err)
				}
				mail++
			}
		}
		if entries != h.Entries || mail != h.Mail {
			t.Fatalf("read %d entries and %d messages, the header says %d and %d", entries, mail, h.Entries, h.Mail)
		}
	})
}

// craftF is craft for a fuzz seed.
func craftF(f *testing.F, entries []Entry, mail []testMail) []byte {
	f.Helper()
	b, err := craftBytes(entries, mail)
	if err != nil {
		f.Fatal(err)
	}
	return b
}
