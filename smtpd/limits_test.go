package smtpd

import (
	"bufio"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/internal/testutil"
)

// dialFrom connects to addr from the loopback address src and returns the connection and
// its first reply line.
func dialFrom(t *testing.T, src, addr string) (net.Conn, string) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("no reply from %s: %v", addr, err)
	}
	return c, strings.TrimRight(line, "\r\n")
}

// wantClosed fails unless the server closes c within 10 s.
func wantClosed(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := io.ReadAll(c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("the server did not close the connection")
	}
}

func TestConnectionCapsAnswer421(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.MaxConnections, c.MaxConnectionsPerSource = 4, 2 })
	a1, greet := dialFrom(t, "127.0.0.2", ts.addr)
	if !strings.HasPrefix(greet, "220 ") {
		t.Fatalf("first connection: %q, want 220", greet)
	}
	if _, greet := dialFrom(t, "127.0.0.2", ts.addr); !strings.HasPrefix(greet, "220 ") {
		t.Fatalf("second connection: %q, want 220", greet)
	}
	c, greet := dialFrom(t, "127.0.0.2", ts.addr)
	if want := "421 4.7.0 mx1.example.com Too many connections from your address, try again later"; greet != want {
		t.Fatalf("third from one address: %q, want %q", greet, want)
	}
	wantClosed(t, c)
	// Another client address still gets in, up to the global cap.
	for i := 0; i < 2; i++ {
		if _, greet := dialFrom(t, "127.0.0.3", ts.addr); !strings.HasPrefix(greet, "220 ") {
			t.Fatalf("other address: %q, want 220", greet)
		}
	}
	c, greet = dialFrom(t, "127.0.0.4", ts.addr)
	if want := "421 4.7.0 mx1.example.com Too many connections, try again later"; greet != want {
		t.Fatalf("over the global cap: %q, want %q", greet, want)
	}
	wantClosed(t, c)
	// A session that ends gives its slot back.
	io.WriteString(a1, "QUIT\r\n")
	wantClosed(t, a1)
	testutil.Poll(t, "a slot free again", 5*time.Second, testutil.Cond(func() bool { return ts.limit.Open() == 3 }))
	if _, greet := dialFrom(t, "127.0.0.4", ts.addr); !strings.HasPrefix(greet, "220 ") {
		t.Fatalf("after a QUIT: %q, want 220", greet)
	}
	testutil.Poll(t, "refusals logged", 5*time.Second, testutil.Cond(func() bool { return strings.Contains(ts.logs.String(), "refusing connections over the cap") }))
}

func TestSessionTimeoutEndsBusySessions(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.SessionTimeout = 300 * time.Millisecond })
	rc := dialRaw(t, ts.addr)
	rc.expect("EHLO client.example.net", 250)
	start := time.Now()
	for {
		// A client that keeps talking, each command well within ReadTimeout.
		if err := rc.tp.PrintfLine("NOOP"); err != nil {
			break
		}
		if _, _, err := rc.tp.ReadResponse(250); err != nil {
			break
		}
		if time.Since(start) > 10*time.Second {
			t.Fatal("session still open after 10s, session timeout 300ms")
		}
		time.Sleep(20 * time.Millisecond) // the client's pace
	}
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Fatalf("session ended after %v, before its timeout", d)
	}
	testutil.Poll(t, "the slot given back", 5*time.Second, testutil.Cond(func() bool { return ts.limit.Open() == 0 }))
}

func TestConnectionCapConfig(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Addr, cfg.Hostname, cfg.Store, cfg.Policy = "127.0.0.1:0", "mx", newFakeStore(), &fakePolicy{}
	cfg.MaxConnections, cfg.MaxConnectionsPerSource = 10, 20
	if _, err := New(cfg); !errors.Is(err, ErrConfig) {
		t.Fatalf("per-source cap over the global one: %v, want ErrConfig", err)
	}
	cfg.MaxConnections, cfg.MaxConnectionsPerSource = 10, 0
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if s.cfg.MaxConnectionsPerSource != 10 {
		t.Fatalf("per-source default with a cap of 10: %d, want 10", s.cfg.MaxConnectionsPerSource)
	}
}
