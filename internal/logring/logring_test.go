package logring

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
)

func TestRingKeepsLastLines(t *testing.T) {
	r := New(3, 1<<20)
	for i := 1; i <= 5; i++ {
		fmt.Fprintf(r, "line %d\n", i)
	}
	if got, want := string(r.Bytes()), "line 3\nline 4\nline 5\n"; got != want {
		t.Fatalf("ring holds %q, want %q", got, want)
	}
	if r.Dropped() != 2 || r.Len() != 3 {
		t.Fatalf("dropped %d, len %d; want 2, 3", r.Dropped(), r.Len())
	}
}

func TestRingByteLimit(t *testing.T) {
	r := New(1000, 40)
	for i := 0; i < 20; i++ {
		fmt.Fprintf(r, "%08d\n", i) // 9 bytes a line
	}
	b := r.Bytes()
	if len(b) > 40 {
		t.Fatalf("ring holds %d bytes over its limit of 40", len(b))
	}
	if !strings.HasSuffix(string(b), "00000019\n") || strings.Count(string(b), "\n") != 4 {
		t.Fatalf("ring holds %q, want the last 4 lines", b)
	}
	// A line over a quarter of the limit is cut, not lost.
	r.Write([]byte(strings.Repeat("x", 100) + "\n"))
	last := strings.Split(strings.TrimSuffix(string(r.Bytes()), "\n"), "\n")
	if l := last[len(last)-1]; len(l) != 9 || l[0] != 'x' {
		t.Fatalf("long line kept as %q, want it cut to 10 bytes with its newline", l)
	}
}

func TestRingJoinsPartialWrites(t *testing.T) {
	r := New(10, 1<<20)
	r.Write([]byte("hel"))
	r.Write([]byte("lo\nwor"))
	if got := string(r.Bytes()); got != "hello\n" {
		t.Fatalf("got %q, want only the complete line", got)
	}
	r.Write([]byte("ld\n"))
	if got := string(r.Bytes()); got != "hello\nworld\n" {
		t.Fatalf("got %q", got)
	}
}

func TestRingConcurrent(t *testing.T) {
	r := New(100, 1<<20)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 1000; i++ {
				fmt.Fprintf(r, "g%d %d\n", g, i)
				_ = r.Bytes()
			}
		}()
	}
	wg.Wait()
	if r.Len() != 100 || bytes.Count(r.Bytes(), []byte("\n")) != 100 {
		t.Fatalf("len %d after concurrent writes, want 100", r.Len())
	}
}
