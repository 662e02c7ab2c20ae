package transport

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pmgcm/pmgcm/internal/testutil"
)

var loopback = net.IPv4(127, 0, 0, 1)

// noLeaks fails the test if goroutines started during it outlive it. Call it
// first, so its cleanup runs after every other.
func noLeaks(t *testing.T) {
	t.Helper()
	base := runtime.NumGoroutine()
	t.Cleanup(func() {
		testutil.Poll(t, "no goroutine leak", 5*time.Second, func() error {
			if n := runtime.NumGoroutine(); n > base {
				return leakError{n: n, base: base}
			}
			return nil
		})
	})
}

// leakError reports a goroutine leak; it takes the stacks only when printed (the failure),
// not on every attempt of the poll.
type leakError struct{ n, base int }

func (e leakError) Error() string {
	buf := make([]byte, 1<<20)
	return fmt.Sprintf("%d goroutines, started with %d\n%s", e.n, e.base, buf[:runtime.Stack(buf, true)])
}

func newTestCA(t *testing.T) *CA {
	t.Helper()
	ca, err := NewCA("test-cluster")
	if err != nil {
		t.Fatalf("NewCA: %v", err)
	}
	return ca
}

// nodeIdentity issues a fresh key and node certificate from ca.
func nodeIdentity(t *testing.T, ca *CA, name string, ip net.IP) *Identity {
	t.Helper()
	key, keyPEM, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := ca.IssueNodeCert(key.Public(), name, ip, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	id, err := NewIdentity(certPEM, keyPEM, ca.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// standaloneIdentity makes a self-signed identity with no CA.
func standaloneIdentity(t *testing.T, name string) *Identity {
	t.Helper()
	key, keyPEM, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := SelfSigned(key, name, loopback)
	if err != nil {
		t.Fatal(err)
	}
	id, err := NewIdentity(certPEM, keyPEM, nil)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

type muxOpt func(*Config)

func withAuthorizer(a PeerAuthorizer) muxOpt { return func(c *Config) { c.Authorize = a } }
func withHandshakeTimeout(d time.Duration) muxOpt {
	return func(c *Config) { c.HandshakeTimeout = d }
}

// openMux opens a mux on 127.0.0.1:0 and closes it when the test ends.
func openMux(t *testing.T, id *Identity, opts ...muxOpt) *Mux {
	t.Helper()
	cfg := DefaultConfig("127.0.0.1:0")
	cfg.Logger = hclog.New(&hclog.LoggerOptions{Name: t.Name(), Level: hclog.Debug, Output: testWriter{t}})
	for _, o := range opts {
		o(&cfg)
	}
	m, err := New(cfg, id)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := m.Open(); err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

// testWriter sends logs to t.Log, so they show only for failing tests.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

type acceptResult struct {
	c   net.Conn
	err error
}

// acceptAsync runs one Accept in the background.
func acceptAsync(l net.Listener) <-chan acceptResult {
	out := make(chan acceptResult, 1)
	go func() {
		c, err := l.Accept()
		out <- acceptResult{c, err}
	}()
	return out
}

// acceptOne accepts one connection on l within a few seconds; the test closes it.
func acceptOne(t *testing.T, l net.Listener) net.Conn {
	t.Helper()
	select {
	case r := <-acceptAsync(l):
		if r.err != nil {
			t.Fatalf("Accept: %v", r.err)
		}
		t.Cleanup(func() { _ = r.c.Close() })
		return r.c
	case <-time.After(5 * time.Second):
		t.Fatal("Accept: timed out")
		return nil
	}
}

// rawDial speaks the mux protocol with a hand-made TLS client that trusts any
// server, presenting cert (may be nil), and returns the error seen up to and
// including reading the channel acknowledgement.
func rawDial(addr string, cert *tls.Certificate, ch byte) error {
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte{ch}); err != nil {
		return err
	}
	b := make([]byte, 1)
	if _, err := c.Read(b); err != nil {
		return err
	}
	if b[0] != ch {
		return errors.New("bad acknowledgement")
	}
	return nil
}
