package mailstore

import (
	"bytes"
	"io"
	"testing"
)

// BenchmarkAcceptCPU is the CPU and allocations of one Accept of a 20 KiB message
// (the fsyncs included; compare allocations, not time, on a shared machine).
func BenchmarkAcceptCPU(b *testing.B) {
	s := newStore(b, 1)
	raw := message("bench", 20<<10)
	b.ReportAllocs()
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		if _, err := s.Accept("a@example.org", []string{"b@example.net"}, struct{ io.Reader }{bytes.NewReader(raw)}); err != nil { // no WriterTo, as SMTP's reader
			b.Fatal(err)
		}
	}
}

// The header buffer keeps exactly the header, through its empty line, whatever
// the sizes of the writes (the empty line may straddle two of them).
func TestPrefixBufferStopsAtHeaderEnd(t *testing.T) {
	for _, msg := range []string{
		"From: a\r\nSubject: hello\r\n\r\nbody\r\n\r\nmore\r\n",
		"From: a\nSubject: hello\n\nbody\n\nmore\n",
		"Subject: hello\r\n\r\n",
		"Subject: hello\r\n",
	} {
		want := msg
		if e := headerEnd([]byte(msg)); e >= 0 {
			want = msg[:e]
		}
		for size := 1; size <= len(msg); size++ {
			p := &prefixBuffer{max: maxHeader}
			for i := 0; i < len(msg); i += size {
				if n, _ := p.Write([]byte(msg[i:min(i+size, len(msg))])); n != min(size, len(msg)-i) {
					t.Fatalf("write returned %d", n)
				}
			}
			if p.String() != want {
				t.Fatalf("writes of %d: kept %q, want %q", size, p.String(), want)
			}
			if got := parseSubject(p.Bytes()); got != "hello" {
				t.Fatalf("writes of %d: subject %q", size, got)
			}
		}
	}
	// Past max, the rest is dropped even without an empty line.
	p := &prefixBuffer{max: 10}
	_, _ = p.Write([]byte("Subject: a very long line"))
	if p.Len() != 10 {
		t.Fatalf("kept %d bytes, want 10", p.Len())
	}
}
