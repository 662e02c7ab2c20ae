package integration

import (
	"bufio"
	"errors"
	"net"
	"net/textproto"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/internal/testutil"
)

// TestStopDrainsSMTP: SIGTERM on a node while a message is in the middle of DATA. The
// node stops accepting connections at once (a sending MTA goes to the next MX), answers
// 421 to a command on an idle connection, lets the transfer finish with a 250, and only
// then stops; the message is on every node after it starts again.
func TestStopDrainsSMTP(t *testing.T) {
	mc := newMailCluster(t, 3, false)
	mc.form()
	setConfig(t, mc.Nodes, "mail/relay_domains", mailDomain)
	_, followers := mc.roles()
	n := followers[0]
	addr := mc.addr(n)

	dial := func() (net.Conn, *textproto.Reader) {
		conn, err := net.DialTimeout("tcp", addr, 3*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		_ = conn.SetDeadline(time.Now().Add(60 * time.Second))
		r := textproto.NewReader(bufio.NewReader(conn))
		if code, msg, err := r.ReadResponse(220); err != nil {
			t.Fatalf("greeting: %d %s %v", code, msg, err)
		}
		return conn, r
	}
	cmd := func(conn net.Conn, r *textproto.Reader, line string, want int) string {
		t.Helper()
		if _, err := conn.Write([]byte(line + "\r\n")); err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		code, msg, err := r.ReadResponse(want)
		if err != nil {
			t.Fatalf("%s: %d %s (%v), want %d", line, code, msg, err, want)
		}
		return msg
	}
	idle, idleR := dial()
	cmd(idle, idleR, "EHLO idle.pmgcm.test", 250)
	conn, r := dial()
	cmd(conn, r, "EHLO busy.pmgcm.test", 250)
	cmd(conn, r, "MAIL FROM:<"+mailFrom+">", 250)
	cmd(conn, r, "RCPT TO:<user@"+mailDomain+">", 250)
	cmd(conn, r, "DATA", 354)
	msg := mailMsg("drained", 20000)
	half := len(msg) / 2
	if _, err := conn.Write(msg[:half]); err != nil {
		t.Fatal(err)
	}

	sent := time.Now()
	n.process().Signal(syscall.SIGTERM)
	testutil.Poll(t, "the SMTP listener closes", 10*time.Second, func() error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return errStillListening
		}
		return nil
	})
	t.Logf("SMTP refused connections %v after SIGTERM", time.Since(sent).Round(time.Millisecond))
	if _, err := idle.Write([]byte("NOOP\r\n")); err != nil {
		t.Fatal(err)
	}
	if code, text, err := idleR.ReadResponse(421); err != nil || !strings.Contains(text, "4.3.2") {
		t.Errorf("NOOP on an idle connection while draining: %d %s (%v), want 421 4.3.2", code, text, err)
	}

	// The transfer in flight completes and is acknowledged.
	if _, err := conn.Write(msg[half:]); err != nil {
		t.Fatal(err)
	}
	reply := cmd(conn, r, ".", 250)
	if !strings.Contains(reply, "queued as") {
		t.Errorf("end of DATA: %q", reply)
	}
	n.Stop() // exits 0
	n.Start()
	mc.waitAllActive(mc.Nodes, 60*time.Second)
	waitMail(t, mc.Nodes, map[string]string{"drained": sha(msg)}, 60*time.Second)
}

// errStillListening: a connection was accepted.
var errStillListening = errors.New("the SMTP port still accepts connections")
