package smtpd

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"
)

// refLimit is go-smtp v0.25's lineLimitReader check, byte by byte: the behaviour
// lineLimit keeps.
type refLimit struct{ cur int }

func (r *refLimit) check(b []byte) error {
	if r.cur > maxLineLength {
		return smtp.ErrTooLongLine
	}
	for _, c := range b {
		if c == '\n' {
			r.cur = 0
		}
		r.cur++
		if r.cur > maxLineLength {
			return smtp.ErrTooLongLine
		}
	}
	return nil
}

// sameAsGoSMTP feeds data in reads of the given sizes to both checks and reports the
// first read on which they disagree.
func sameAsGoSMTP(t *testing.T, data []byte, sizes []byte) {
	t.Helper()
	var l lineLimit
	var r refLimit
	for i := 0; len(data) > 0; i++ {
		n := len(data)
		if len(sizes) > 0 {
			n = min(n, 1+int(sizes[i%len(sizes)])*16)
		}
		got, want := l.check(data[:n]), r.check(data[:n])
		if !errors.Is(got, want) || (got != nil) != (want != nil) {
			t.Fatalf("read %d (%d bytes): got %v, go-smtp's check %v", i, n, got, want)
		}
		if got != nil {
			if l.check([]byte("x")) == nil {
				t.Fatal("a read after a too-long line succeeded")
			}
			return
		}
		data = data[n:]
	}
}

func TestLineLimitMatchesGoSMTP(t *testing.T) {
	line := func(n int) string { return strings.Repeat("a", n) }
	cases := map[string]string{
		"short lines":              "EHLO c\r\nMAIL FROM:<a@b>\r\n",
		"first line at the limit":  line(maxLineLength) + "\n",
		"first line one over":      line(maxLineLength+1) + "\n",
		"later line at the limit":  "x\n" + line(maxLineLength-1) + "\n",
		"later line one over":      "x\n" + line(maxLineLength) + "\n",
		"over without a line end":  line(3 * maxLineLength),
		"many lines, one too long": strings.Repeat(line(998)+"\r\n", 50) + line(2500) + "\r\n",
		"empty lines":              strings.Repeat("\n", 5000),
	}
	for name, data := range cases {
		t.Run(name, func(t *testing.T) {
			for _, sizes := range [][]byte{nil, {0}, {3}, {255}, {7, 0, 130}} {
				sameAsGoSMTP(t, []byte(data), sizes)
			}
		})
	}
}

func FuzzLineLimit(f *testing.F) {
	f.Add([]byte("EHLO c\r\n"), []byte{1})
	f.Add(bytes.Repeat([]byte("a"), maxLineLength+1), []byte{0, 200})
	f.Add(append(bytes.Repeat([]byte("ab\n"), 700), bytes.Repeat([]byte("z"), 1999)...), []byte{})
	f.Fuzz(func(t *testing.T, data, sizes []byte) {
		// Long runs without LF are what the limit is about: stretch the input so that the
		// fuzzer reaches them.
		data = bytes.Repeat(data, 1+2*maxLineLength/(len(data)+1))
		sameAsGoSMTP(t, data, sizes)
	})
}
