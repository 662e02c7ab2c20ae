package smtpd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/internal/testutil"
)

func TestNewValidates(t *testing.T) {
	valid := func() Config {
		c := DefaultConfig()
		c.Addr, c.Hostname, c.Store, c.Policy = "127.0.0.1:25", "mx", newFakeStore(), &fakePolicy{}
		return c
	}
	for _, tt := range []struct {
		name string
		edit func(*Config)
	}{
		{"no address", func(c *Config) { c.Addr = "" }},
		{"no port", func(c *Config) { c.Addr = "127.0.0.1" }},
		{"host name", func(c *Config) { c.Addr = "localhost:25" }},
		{"named port", func(c *Config) { c.Addr = "127.0.0.1:smtp" }},
		{"port out of range", func(c *Config) { c.Addr = "127.0.0.1:70000" }},
		{"no hostname", func(c *Config) { c.Hostname = "" }},
		{"hostname with space", func(c *Config) { c.Hostname = "mx 1" }},
		{"no store", func(c *Config) { c.Store = nil }},
		{"no policy", func(c *Config) { c.Policy = nil }},
		{"negative timeout", func(c *Config) { c.ReadTimeout = -1 }},
		{"negative recipients", func(c *Config) { c.MaxRecipients = -1 }},
	} {
		c := valid()
		tt.edit(&c)
		if _, err := New(c); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: err = %v, want ErrConfig", tt.name, err)
		}
	}
	c := valid()
	c.Addr, c.ReadTimeout, c.WriteTimeout, c.MaxRecipients, c.Logger = "[::1]:0", 0, 0, 0, nil
	s, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	if s.cfg.ReadTimeout != DefaultReadTimeout || s.cfg.WriteTimeout != DefaultWriteTimeout ||
		s.cfg.MaxRecipients != DefaultMaxRecipients || s.log == nil {
		t.Errorf("defaults not filled: %+v", s.cfg)
	}
	if s.Addr() != nil {
		t.Errorf("Addr before Open = %v", s.Addr())
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close of a server never opened: %v", err)
	}
	if err := s.Open(); !errors.Is(err, ErrClosed) {
		t.Errorf("Open after Close: %v", err)
	}
}

func TestOpenErrors(t *testing.T) {
	ts := startServer(t, nil)
	if err := ts.Open(); !errors.Is(err, ErrOpen) {
		t.Errorf("second Open: %v", err)
	}
	// The port is taken: the error names the address.
	c := ts.cfg
	c.Addr = ts.addr
	s, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	err = s.Open()
	if err == nil || !strings.Contains(err.Error(), ts.addr) {
		t.Errorf("Open on a taken port: %v", err)
	}
	s.Close()
}

// startData opens a raw session and sends part of a message after DATA.
func startData(t *testing.T, addr string) *rawClient {
	t.Helper()
	rc := dialRaw(t, addr)
	rc.begin()
	rc.expect("DATA", 354)
	if _, err := rc.conn.Write([]byte("Subject: half\r\n\r\nthe first half of the body\r\n")); err != nil {
		t.Fatal(err)
	}
	return rc
}

func TestDisconnectMidData(t *testing.T) {
	ts := startServer(t, nil)
	rc := startData(t, ts.addr)
	<-ts.store.started
	rc.conn.Close()
	testutil.Poll(t, "the store to see the transfer break", 10*time.Second, testutil.Cond(func() bool { return ts.store.abortedCount() == 1 }))
	if n := ts.store.count(); n != 0 {
		t.Errorf("stored %d messages from a client that went away", n)
	}
	if err := send(ts.addr, "a@example.net", []string{"b@example.com"}, testMessage); err != nil {
		t.Errorf("send after the broken transfer: %v", err)
	}
	ts.wantOutcomes(t, map[Outcome]int{FailedTransfer: 1, Accepted: 1})
}

// TestCloseDuringData closes the server while a client is in the middle of DATA: the
// store's reader fails, the client gets no 250, nothing is stored, and Close returns.
func TestCloseDuringData(t *testing.T) {
	ts := startServer(t, nil)
	idle := dialRaw(t, ts.addr) // a session between commands
	idle.expect("EHLO c", 250)
	rc := startData(t, ts.addr)
	<-ts.store.started

	if err := ts.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	// Close has returned: no Accept is running any more.
	if ts.store.abortedCount() != 1 || ts.store.count() != 0 {
		t.Errorf("after Close: %d aborted, %d stored", ts.store.abortedCount(), ts.store.count())
	}
	if got := readAll(rc); strings.Contains(got, "250") {
		t.Errorf("client mid-DATA got %q after Close", got)
	}
	if got := readAll(idle); got != "" {
		t.Errorf("idle client got %q after Close", got)
	}
	if err := ts.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := net.DialTimeout("tcp", ts.addr, time.Second); err == nil {
		t.Error("still accepting connections after Close")
	}
	ts.wantOutcomes(t, map[Outcome]int{FailedShutdown: 1})
}

// TestCloseWhileStoring closes the server while the store is busy with a complete
// message (fsync): Close waits for it, and the client, whose connection is closed, gets no
// 250 although the store kept the message (the sender retries: a duplicate, never a loss).
func TestCloseWhileStoring(t *testing.T) {
	ts := startServer(t, nil)
	ts.store.block = make(chan struct{})
	rc := startData(t, ts.addr)
	if _, err := rc.conn.Write([]byte(".\r\n")); err != nil {
		t.Fatal(err)
	}
	<-ts.store.read // the whole message is in; the store is "syncing" it

	closed := make(chan error, 1)
	go func() { closed <- ts.Close() }()
	// Close stops listening first, then waits for the store.
	testutil.Poll(t, "the listener to close", 10*time.Second, testutil.Cond(func() bool {
		c, err := net.DialTimeout("tcp", ts.addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err != nil
	}))
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) while the store was still busy", err)
	default:
	}
	close(ts.store.block)
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	if got := readAll(rc); strings.Contains(got, "250") {
		t.Errorf("client got %q: acknowledged after Close", got)
	}
}

// readAll reads what the server still sends until it closes the connection.
func readAll(rc *rawClient) string {
	rc.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, _ := io.ReadAll(rc.tp.R)
	return string(b)
}

func TestConcurrentClients(t *testing.T) {
	ts := startServer(t, nil)
	const clients, perClient = 40, 5
	var wg sync.WaitGroup
	want := map[string]bool{}
	var mu sync.Mutex
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range perClient {
				body := crlf(fmt.Sprintf("Subject: %d/%d\n\n%s\n", i, j, strings.Repeat("0123456789abcdef\n", i*13+j)))
				mu.Lock()
				want[string(body)] = true
				mu.Unlock()
				if err := send(ts.addr, fmt.Sprintf("c%d@example.net", i), []string{"b@example.com"}, body); err != nil {
					t.Errorf("client %d message %d: %v", i, j, err)
				}
			}
		}()
	}
	wg.Wait()
	got := ts.store.all()
	if len(got) != clients*perClient {
		t.Fatalf("stored %d messages, want %d", len(got), clients*perClient)
	}
	for _, m := range got {
		if !want[string(m.data)] {
			t.Errorf("stored a message nobody sent: %.60q", m.data)
		}
		delete(want, string(m.data))
	}
}

// TestPythonSmtplib sends with Python's smtplib, where python3 is installed.
func TestPythonSmtplib(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not installed")
	}
	ts := startServer(t, nil)
	host, port, _ := net.SplitHostPort(ts.addr)
	script := `
import smtplib, sys
host, port = sys.argv[1], int(sys.argv[2])
msg = b"From: py@example.net\r\nSubject: from python\r\n\r\n.dot line\r\nbody \xc3\xa9\r\n"
with smtplib.SMTP(host, port, timeout=20) as s:
    s.ehlo("python.example.net")
    refused = s.sendmail("py@example.net", ["bob@example.com", "carol@a.example.org"], msg)
    print("refused:", sorted(refused))
    try:
        s.sendmail("py@example.net", ["victim@elsewhere.test"], msg)
        print("foreign: accepted")
    except smtplib.SMTPRecipientsRefused as e:
        code, text = e.recipients["victim@elsewhere.test"]
        print("foreign:", code, text.decode())
    try:
        s.sendmail("py@example.net", ["bob@example.com"], b"x" * 70000)
        print("big: accepted")
    except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as e:
        print("big:", e.smtp_code)
`
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, py, "-c", script, host, port).CombinedOutput()
	if err != nil {
		t.Fatalf("python: %v\n%s", err, out)
	}
	want := "refused: []\nforeign: 550 5.7.1 relay access denied\nbig: 552\n"
	if string(out) != want {
		t.Errorf("python printed %q, want %q", out, want)
	}
	msgs := ts.store.all()
	if len(msgs) != 1 {
		t.Fatalf("stored %d messages", len(msgs))
	}
	if want := "From: py@example.net\r\nSubject: from python\r\n\r\n.dot line\r\nbody \xc3\xa9\r\n"; !bytes.Equal(msgs[0].data, []byte(want)) {
		t.Errorf("stored %q, want %q", msgs[0].data, want)
	}
	if strings.Join(msgs[0].to, ",") != "bob@example.com,carol@a.example.org" || msgs[0].from != "py@example.net" {
		t.Errorf("envelope %q -> %q", msgs[0].from, msgs[0].to)
	}
}
