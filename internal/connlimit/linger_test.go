package connlimit

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/internal/testutil"
)

// unixListener listens on a unix socket in a temporary directory of t, limited by l.
func unixListener(t *testing.T, l *Limiter) (string, <-chan net.Conn) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "s.sock")
	raw, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	return path, serve(t, l.Listen(raw))
}

func dialUnix(t *testing.T, path string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// TestRefusedClientCanStillWrite: a refused client that writes after the refusal has
// arrived (an HTTP client writes its request while the 503 is on its way) can write,
// reads the whole refusal and then the end of the stream; closed at once, its write would
// fail with a broken pipe and it would never see why it was refused.
func TestRefusedClientCanStillWrite(t *testing.T) {
	l, err := New(Config{Name: "t", Max: 1, Refuse: func(c net.Conn, _ error) {
		_, _ = c.Write([]byte("503 busy\n"))
	}})
	if err != nil {
		t.Fatal(err)
	}
	path, conns := unixListener(t, l)
	dialUnix(t, path)
	accepted(t, conns)

	for i := 0; i < 3; i++ {
		c := dialUnix(t, path)
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		r := bufio.NewReader(c)
		line, err := r.ReadString('\n')
		if err != nil || line != "503 busy\n" {
			t.Fatalf("refusal %d: %q, %v", i, line, err)
		}
		// The server has answered; without the lingering close it has closed too.
		if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n" + strings.Repeat("x", 4096))); err != nil {
			t.Fatalf("refused client %d cannot write its request: %v", i, err)
		}
		if _, err := r.ReadByte(); err == nil {
			t.Fatalf("refused connection %d sent more than its refusal", i)
		}
		_ = c.Close()
		waitLingerers(t, l)
	}
}

func waitLingerers(t *testing.T, l *Limiter) {
	t.Helper()
	testutil.Poll(t, "the refused connections closed", 5*time.Second, func() error {
		if n := len(l.lingering); n != 0 {
			return fmt.Errorf("%d still lingering", n)
		}
		return nil
	})
}

// closedBy polls c with small writes until one fails (the server has closed it) and
// returns when that was, failing t if it is still open after timeout.
func closedBy(t *testing.T, c net.Conn, timeout time.Duration) time.Time {
	t.Helper()
	testutil.Poll(t, "the server closed the connection", timeout, func() error {
		_ = c.SetWriteDeadline(time.Now().Add(time.Second))
		if _, err := c.Write([]byte("x")); err == nil {
			return errors.New("still open")
		}
		return nil
	})
	return time.Now()
}

// TestLingeringIsBounded: refused clients that never close hold at most the lingering
// slots, each for LingerTimeout; past them a refused connection is closed at once, and
// the accept loop never waits for them.
func TestLingeringIsBounded(t *testing.T) {
	l, err := New(Config{Name: "t", Max: 4, Refuse: func(c net.Conn, _ error) {
		_, _ = c.Write([]byte("busy\n"))
	}})
	if err != nil {
		t.Fatal(err)
	}
	slots := cap(l.lingering)
	if slots != 1 {
		t.Fatalf("%d lingering slots for a cap of 4, want 1", slots)
	}
	path, conns := unixListener(t, l)
	for i := 0; i < 4; i++ {
		dialUnix(t, path)
		accepted(t, conns)
	}
	start := time.Now()
	silent := dialUnix(t, path) // refused, then lingers: it never closes
	if got := readLine(t, silent); got != "busy\n" {
		t.Fatalf("first refused: %q", got)
	}
	for i := 0; i < 3; i++ {
		c := dialUnix(t, path)
		if got := readLine(t, c); got != "busy\n" {
			t.Fatalf("refused past the lingering slots: %q", got)
		}
		// Closed at once, not after LingerTimeout.
		if at := closedBy(t, c, 5*time.Second); at.Sub(start) >= LingerTimeout {
			t.Fatalf("connection %d past the lingering slots open for %v", i, at.Sub(start))
		}
	}
	// The silent one is closed after LingerTimeout.
	if d := closedBy(t, silent, 5*time.Second).Sub(start); d < LingerTimeout {
		t.Fatalf("the lingering connection was closed after %v, before LingerTimeout", d)
	}
	waitLingerers(t, l)
}

func readLine(t *testing.T, c net.Conn) string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var b []byte
	one := make([]byte, 1)
	for {
		n, err := c.Read(one)
		if n == 1 {
			b = append(b, one[0])
			if one[0] == '\n' {
				return string(b)
			}
		}
		if err != nil {
			t.Fatalf("read %q then %v", b, err)
		}
	}
}

// TestCloseEndsLingering: Close (the server shutting down) closes the refused
// connections still lingering at once, not after LingerTimeout, and one refused after
// it is closed at once.
func TestCloseEndsLingering(t *testing.T) {
	l, err := New(Config{Name: "t", Max: 4, Refuse: func(c net.Conn, _ error) {
		_, _ = c.Write([]byte("busy\n"))
	}})
	if err != nil {
		t.Fatal(err)
	}
	path, conns := unixListener(t, l)
	for i := 0; i < 4; i++ {
		dialUnix(t, path)
		accepted(t, conns)
	}
	silent := dialUnix(t, path) // refused, then lingers: it never closes
	if got := readLine(t, silent); got != "busy\n" {
		t.Fatalf("refused: %q", got)
	}
	testutil.Poll(t, "the refused connection lingering", 5*time.Second, testutil.Cond(func() bool { return len(l.lingering) == 1 }))
	start := time.Now()
	l.Close()
	if d := closedBy(t, silent, 5*time.Second).Sub(start); d >= LingerTimeout {
		t.Fatalf("the lingering connection was closed %v after Close, want at once", d)
	}
	waitLingerers(t, l)

	start = time.Now()
	late := dialUnix(t, path)
	if got := readLine(t, late); got != "busy\n" {
		t.Fatalf("refused after Close: %q", got)
	}
	if d := closedBy(t, late, 5*time.Second).Sub(start); d >= LingerTimeout {
		t.Fatalf("a connection refused after Close stayed open %v, want closed at once", d)
	}
	if n := len(l.lingering); n != 0 {
		t.Fatalf("%d lingering after Close", n)
	}
}
