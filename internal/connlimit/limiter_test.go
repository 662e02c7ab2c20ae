package connlimit

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

func tcpAddr(ip string) net.Addr { return &net.TCPAddr{IP: net.ParseIP(ip), Port: 4000} }

func TestAcquireCaps(t *testing.T) {
	l, err := New(Config{Name: "t", Max: 3, MaxPerSource: 2})
	if err != nil {
		t.Fatal(err)
	}
	a, b, c := tcpAddr("127.0.0.2"), tcpAddr("::ffff:127.0.0.2"), tcpAddr("127.0.0.3")
	r1, err := l.Acquire(a)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Acquire(b); err != nil { // the same source, mapped
		t.Fatal(err)
	}
	if _, err := l.Acquire(a); !errors.Is(err, ErrPerSource) {
		t.Fatalf("third from one source: %v, want ErrPerSource", err)
	}
	if _, err := l.Acquire(c); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Acquire(tcpAddr("127.0.0.4")); !errors.Is(err, ErrTotal) {
		t.Fatalf("fourth in all: %v, want ErrTotal", err)
	}
	r1()
	r1() // a second release gives nothing back twice
	if got := l.Open(); got != 2 {
		t.Fatalf("open %d after one release, want 2", got)
	}
	if _, err := l.Acquire(a); err != nil {
		t.Fatalf("after a release: %v", err)
	}
	if _, err := l.Acquire(a); !errors.Is(err, ErrPerSource) && !errors.Is(err, ErrTotal) {
		t.Fatalf("over the caps again: %v", err)
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	for _, cfg := range []Config{{Max: 0}, {Max: 1, MaxPerSource: -1}, {Max: 1, IdleTimeout: -1}} {
		if _, err := New(cfg); !errors.Is(err, ErrConfig) {
			t.Errorf("New(%+v) = %v, want ErrConfig", cfg, err)
		}
	}
	l, err := New(Config{Max: 5, MaxPerSource: 9})
	if err != nil || l.MaxPerSource() != 5 {
		t.Fatalf("per-source cap over Max: %v, %d, want it lowered to 5", err, l.MaxPerSource())
	}
}

// serve accepts on ln until it is closed and hands each connection to conns.
func serve(t *testing.T, ln net.Listener) <-chan net.Conn {
	conns := make(chan net.Conn, 100)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns <- c
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		for {
			select {
			case c := <-conns:
				_ = c.Close()
			default:
				return
			}
		}
	})
	return conns
}

func dialFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func accepted(t *testing.T, conns <-chan net.Conn) net.Conn {
	t.Helper()
	select {
	case c := <-conns:
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("no connection accepted")
		return nil
	}
}

// readAll reads c to its end (EOF or reset) within 5 s and returns what came.
func readAll(t *testing.T, c net.Conn) string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection still open after 5s (read %q)", b)
	}
	return string(b)
}

func TestListenRefusesOverTheCaps(t *testing.T) {
	l, err := New(Config{Name: "t", Max: 3, MaxPerSource: 2, Refuse: func(c net.Conn, reason error) {
		_, _ = io.WriteString(c, "busy "+reasonText(reason)+"\n")
	}})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	conns := serve(t, l.Listen(raw))
	addr := raw.Addr().String()

	dialFrom(t, "127.0.0.2", addr)
	s1 := accepted(t, conns)
	dialFrom(t, "127.0.0.2", addr)
	accepted(t, conns)
	if got := readAll(t, dialFrom(t, "127.0.0.2", addr)); got != "busy max-per-source\n" {
		t.Fatalf("third from 127.0.0.2 got %q, want the per-source refusal", got)
	}
	dialFrom(t, "127.0.0.3", addr)
	accepted(t, conns)
	if got := readAll(t, dialFrom(t, "127.0.0.4", addr)); got != "busy max\n" {
		t.Fatalf("fourth in all got %q, want the global refusal", got)
	}
	// A connection closed gives its slot back.
	_ = s1.Close()
	_ = s1.Close()
	dialFrom(t, "127.0.0.4", addr)
	accepted(t, conns)
	if got := l.Open(); got != 3 {
		t.Fatalf("open %d, want 3", got)
	}
}

func TestIdleTimeoutClosesQuietConnections(t *testing.T) {
	const idle = 150 * time.Millisecond
	l, err := New(Config{Name: "t", Max: 4, IdleTimeout: idle})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	conns := serve(t, l.Listen(raw))
	c := dialFrom(t, "127.0.0.2", raw.Addr().String())
	s := accepted(t, conns)
	// The server echoes lines: a client that talks more often than idle stays connected.
	go func() {
		r := bufio.NewReader(s)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			if _, err := io.WriteString(s, line); err != nil {
				return
			}
		}
	}()
	r := bufio.NewReader(c)
	start := time.Now()
	var quiet time.Time
	for {
		if _, err := io.WriteString(c, "ping\n"); err != nil {
			t.Fatalf("closed while active: %v", err)
		}
		if _, err := r.ReadString('\n'); err != nil {
			t.Fatalf("closed while active after %v: %v", time.Since(start), err)
		}
		quiet = time.Now()
		if time.Since(start) > 4*idle {
			break
		}
		time.Sleep(idle / 5) // the client's pace, not a wait for a state
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := r.ReadByte(); err == nil || errors.As(err, new(net.Error)) && err.(net.Error).Timeout() {
		t.Fatalf("quiet connection not closed: %v", err)
	}
	if d := time.Since(quiet); d < idle-20*time.Millisecond {
		t.Fatalf("closed %v after going quiet, before the idle timeout %v", d, idle)
	}
	for deadline := time.Now().Add(5 * time.Second); l.Open() != 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("open %d after the idle close, want 0", l.Open())
		}
	}
}

func TestMaxLifetimeClosesBusyConnections(t *testing.T) {
	const life = 200 * time.Millisecond
	l, err := New(Config{Name: "t", Max: 4, IdleTimeout: time.Hour, MaxLifetime: life})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	conns := serve(t, l.Listen(raw))
	c := dialFrom(t, "127.0.0.2", raw.Addr().String())
	s := accepted(t, conns)
	start := time.Now()
	go func() { _, _ = io.Copy(io.Discard, s) }()
	var err2 error
	for time.Since(start) < 5*time.Second {
		if _, err2 = io.WriteString(c, "data\n"); err2 != nil {
			break
		}
		time.Sleep(10 * time.Millisecond) // the client's pace
	}
	if err2 == nil {
		t.Fatal("busy connection still open after 5s, lifetime 200ms")
	}
	if d := time.Since(start); d < life {
		t.Fatalf("closed after %v, before its lifetime %v", d, life)
	}
}

// syncBuffer is a bytes.Buffer safe for the logger's and the test's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestRefusalsAreSummedUp(t *testing.T) {
	var buf syncBuffer
	logger := hclog.New(&hclog.LoggerOptions{Output: &buf, Level: hclog.Debug})
	l, err := New(Config{Name: "t", Max: 2, MaxPerSource: 1, Logger: logger, LogInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Acquire(tcpAddr("127.0.0.2")); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Acquire(tcpAddr("127.0.0.3")); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 500; i++ {
		_, _ = l.Acquire(tcpAddr("127.0.0.2")) // per source
	}
	for i := 0; i < 20; i++ {
		_, _ = l.Acquire(tcpAddr("127.0.0.9")) // total
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(buf.String(), "connections refused over the cap") {
		if time.Now().After(deadline) {
			t.Fatalf("no summary within 5s:\n%s", buf.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	l.Close()
	out := buf.String()
	if n := strings.Count(out, "\n"); n != 2 {
		t.Fatalf("%d log lines for 520 refusals, want 2 (the first, then one summary):\n%s", n, out)
	}
	for _, want := range []string{"refused=519", "over-max=20", "over-max-per-source=499",
		"top-source=127.0.0.2", "top-source-refused=499", "sources=2"} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %s:\n%s", want, out)
		}
	}
}
