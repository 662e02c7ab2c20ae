package integration

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/internal/testutil"
)

// The caps a daemon started with 256 descriptors gets (internal/connlimit.Plan): SMTP 64
// in all and 32 per client address, the join channel 4 per address.
const (
	lowNoFile        = 256
	lowSMTPMax       = 64
	lowSMTPPerIP     = 32
	lowJoinPerSource = 4
	lowControlMax    = 16
)

// dialFrom connects to addr from the loopback address src (on loopback the kernel would
// pick 127.0.0.1 for every connection).
func dialFrom(src, addr string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	return d.Dial("tcp", addr)
}

// smtpGreeting connects from src and returns the connection and its first reply line.
// No greeting within 5 s fails the test: the daemon ran out of descriptors.
func smtpGreeting(t *testing.T, src, addr string) (net.Conn, string) {
	t.Helper()
	c, err := dialFrom(src, addr)
	if err != nil {
		t.Fatalf("connect to SMTP from %s: %v", src, err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		c.Close()
		t.Fatalf("no SMTP greeting from %s within 5s: %v", addr, err)
	}
	_ = c.SetReadDeadline(time.Time{})
	return c, strings.TrimRight(line, "\r\n")
}

func closeAll(conns []net.Conn) {
	for _, c := range conns {
		_ = c.Close()
	}
}

// countLines counts the log lines that contain every one of subs.
func countLines(log string, subs ...string) int {
	n := 0
	for _, line := range strings.Split(log, "\n") {
		ok := true
		for _, s := range subs {
			ok = ok && strings.Contains(line, s)
		}
		if ok {
			n++
		}
	}
	return n
}

// TestSMTPFloodAtLowDescriptorLimit holds 300 SMTP sessions from one address at a node
// with 256 descriptors: that address gets its per-IP share and 421 beyond it, another
// address still gets a 220 up to the global cap and 421 past it, the control socket keeps
// answering, and the refusals make a line or two of log.
func TestSMTPFloodAtLowDescriptorLimit(t *testing.T) {
	t.Parallel()
	mc := newMailCluster(t, 1, false)
	n := mc.Nodes[0]
	n.NoFile = lowNoFile
	// More than 256 descriptors can hold: lowered to the SMTP share, with a warning.
	n.ExtraArgs = append(n.ExtraArgs, "--smtp-max-connections", "500")
	n.Start()
	addr := mc.addr(n)
	src := testutil.IPs(3)
	mustContain(t, "start-up log", n.Log(), "descriptor budget", "nofile=256",
		fmt.Sprintf(`smtp-max-connections="%d (%d per IP)"`, lowSMTPMax, lowSMTPPerIP),
		fmt.Sprintf("--smtp-max-connections 500 is more than the descriptor limit leaves for SMTP (%d of 256): using %d", lowSMTPMax, lowSMTPMax))

	var held []net.Conn
	defer func() { closeAll(held) }()
	greeted, refused := 0, 0
	for i := 0; i < 300; i++ {
		c, line := smtpGreeting(t, src[0], addr)
		switch {
		case strings.HasPrefix(line, "220 "):
			greeted++
			held = append(held, c)
		case line == "421 4.7.0 "+n.Name+" Too many connections from your address, try again later":
			refused++
			_ = c.Close()
		default:
			t.Fatalf("connection %d from %s: %q", i, src[0], line)
		}
	}
	if greeted != lowSMTPPerIP || refused != 300-lowSMTPPerIP {
		t.Fatalf("300 sessions from one address: %d greeted, %d refused; want %d and %d",
			greeted, refused, lowSMTPPerIP, 300-lowSMTPPerIP)
	}
	if _, err := n.Status(); err != nil {
		t.Fatalf("pmgcm status during the flood: %v", err)
	}
	// Another address gets in up to the global cap, and 421 beyond it.
	for i := 0; i < lowSMTPMax-lowSMTPPerIP; i++ {
		c, line := smtpGreeting(t, src[1], addr)
		if !strings.HasPrefix(line, "220 ") {
			t.Fatalf("session %d from a second address: %q, want 220", i, line)
		}
		held = append(held, c)
	}
	c, line := smtpGreeting(t, src[2], addr)
	c.Close()
	if want := "421 4.7.0 " + n.Name + " Too many connections, try again later"; line != want {
		t.Fatalf("past the global cap: %q, want %q", line, want)
	}
	if _, err := n.Status(); err != nil {
		t.Fatalf("pmgcm status with SMTP at its cap: %v", err)
	}
	// Sessions that end give their slots back.
	closeAll(held[:lowSMTPPerIP])
	testutil.Poll(t, "an SMTP slot free again", 10*time.Second, func() error {
		c, line := smtpGreeting(t, src[2], addr)
		c.Close()
		if !strings.HasPrefix(line, "220 ") {
			return errors.New(line)
		}
		return nil
	})
	if got := countLines(n.Log(), "refus", "listener=smtp"); got < 1 || got > 3 {
		t.Fatalf("%d log lines for %d refusals, want 1 to 3 (a summary per interval)", got, refused+1)
	}
}

// flood keeps up to workers idle TCP connections from src to addr open, reconnecting
// each one the server closes, until stop.
type flood struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	open   atomic.Int64
	dials  atomic.Int64
}

func startFlood(t *testing.T, src, addr string, workers int) *flood {
	ctx, cancel := context.WithCancel(context.Background())
	f := &flood{cancel: cancel}
	for i := 0; i < workers; i++ {
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			for ctx.Err() == nil {
				c, err := dialFrom(src, addr)
				if err == nil {
					f.dials.Add(1)
					f.open.Add(1)
					stop := context.AfterFunc(ctx, func() { _ = c.Close() })
					_, _ = io.Copy(io.Discard, c) // until the server (or stop) closes it
					stop()
					_ = c.Close()
					f.open.Add(-1)
				}
				select { // the attacker's pace between reconnects
				case <-ctx.Done():
				case <-time.After(250 * time.Millisecond):
				}
			}
		}()
	}
	t.Cleanup(f.stop)
	return f
}

func (f *flood) stop() {
	f.cancel()
	f.wg.Wait()
}

// TestClusterPortFloodLeavesMembersIn keeps 300 idle TCP connections from one address
// open against the cluster port of a master with 256 descriptors: status keeps answering
// and a new node joins (join channel, RPC and Raft connections) beside the flood.
func TestClusterPortFloodLeavesMembersIn(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 2)
	n1, n2 := c.Nodes[0], c.Nodes[1]
	for _, n := range c.Nodes {
		n.NoFile = lowNoFile
		n.Start()
	}
	n1.CLI("create")
	n1.WaitMaster(15 * time.Second)
	args := joinArgsRetry(t, n1)

	f := startFlood(t, testutil.IPs(1)[0], net.JoinHostPort(n1.IP, strconv.Itoa(n1.Port)), 300)
	testutil.Poll(t, "the flood under way", 10*time.Second, func() error {
		if d := f.dials.Load(); d < 400 {
			return fmt.Errorf("%d connections made", d)
		}
		return nil
	})
	start := time.Now()
	if _, err := n1.Status(); err != nil {
		t.Fatalf("pmgcm status during the flood: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("pmgcm status took %v during the flood", d)
	}
	n2.CLI(append(args, "--yes")...)
	c.waitAllActive(c.Nodes, 30*time.Second)
	dials := f.dials.Load()
	f.stop()
	log := n1.Log()
	if got := countLines(log, "refus", "listener=cluster-handshake"); got < 1 || got > 10 {
		t.Fatalf("%d log lines for about %d refused connections, want a summary per interval", got, dials)
	}
	if strings.Contains(log, "too many open files") {
		t.Fatal("the master ran out of descriptors during the flood")
	}
}

// joinConn is a certificate-less connection to the join channel, as any caller that
// reaches the cluster port may open one.
type joinConn struct {
	net.Conn
	r *bufio.Reader
}

func dialJoin(t *testing.T, src, addr string) *joinConn {
	t.Helper()
	raw, err := dialFrom(src, addr)
	if err != nil {
		t.Fatal(err)
	}
	c := tls.Client(raw, &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true})
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte{'J'}); err != nil {
		t.Fatalf("join channel from %s: %v", src, err)
	}
	b := make([]byte, 1)
	if _, err := io.ReadFull(c, b); err != nil || b[0] != 'J' {
		t.Fatalf("join channel from %s: no acknowledgement: %v", src, err)
	}
	_ = c.SetDeadline(time.Time{})
	return &joinConn{Conn: c, r: bufio.NewReader(c)}
}

// get asks for the join info and returns the status code and body.
func (j *joinConn) get(t *testing.T) (int, string) {
	t.Helper()
	_ = j.SetDeadline(time.Now().Add(5 * time.Second))
	defer j.SetDeadline(time.Time{})
	if _, err := io.WriteString(j, "GET /join/v1/info HTTP/1.1\r\nHost: pmgcm\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(j.r, nil)
	if err != nil {
		t.Fatalf("join info: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestJoinChannelCapsAndIdleTimeout: one address holds only its share of join-channel
// connections (503 beyond it, another address still gets in), and connections left idle
// after a request are closed.
func TestJoinChannelCapsAndIdleTimeout(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 1)
	n := c.Nodes[0]
	n.NoFile = lowNoFile
	n.Start()
	addr := net.JoinHostPort(n.IP, strconv.Itoa(n.Port))
	src := testutil.IPs(2)

	var idle []*joinConn
	for i := 0; i < lowJoinPerSource; i++ {
		j := dialJoin(t, src[0], addr)
		if code, body := j.get(t); code != http.StatusOK {
			t.Fatalf("join info %d from %s: %d %s", i, src[0], code, body)
		}
		idle = append(idle, j)
	}
	last := time.Now()
	over := dialJoin(t, src[0], addr)
	if code, body := over.get(t); code != http.StatusServiceUnavailable || !strings.Contains(body, "from your address") {
		t.Fatalf("join connection past the per-address cap: %d %s, want 503 from your address", code, body)
	}
	if code, body := dialJoin(t, src[1], addr).get(t); code != http.StatusOK {
		t.Fatalf("join info from a second address: %d %s", code, body)
	}
	if _, err := n.Status(); err != nil {
		t.Fatalf("pmgcm status: %v", err)
	}
	// The idle ones are closed by the server (keep-alive idle timeout, 5s).
	for i, j := range idle {
		_ = j.SetReadDeadline(time.Now().Add(15 * time.Second))
		_, err := j.r.ReadByte()
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("idle join connection %d still open after %v", i, time.Since(last))
		}
	}
	if d := time.Since(last); d < 4*time.Second {
		t.Fatalf("idle join connections closed after %v, before the idle timeout", d)
	}
	testutil.Poll(t, "a join slot free again", 10*time.Second, func() error {
		if code, body := dialJoin(t, src[0], addr).get(t); code != http.StatusOK {
			return fmt.Errorf("%d %s", code, body)
		}
		return nil
	})
}

// TestControlSocketCap: the control socket holds at most its share of connections and
// answers the one past it with a 503 that says why; once they go, the CLI works again.
func TestControlSocketCap(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 1)
	n := c.Nodes[0]
	n.NoFile = lowNoFile
	n.Start()
	var held []net.Conn
	defer func() { closeAll(held) }()
	for i := 0; i < lowControlMax; i++ {
		conn, err := net.Dial("unix", n.Socket)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, conn)
	}
	// The daemon accepts in order: the CLI's connection comes after the held ones. The
	// connection of Start's last CLI call may still hold its slot when the held ones come
	// (the daemon frees it once it has read its end), and one of them is refused: then
	// the CLI finds a slot, and the test holds one connection more.
	var errOut string
	testutil.Poll(t, "the CLI refused past the cap", 20*time.Second, func() error {
		_, stderr, err := n.run("status", "--list-single-node")
		if err == nil {
			conn, err := net.Dial("unix", n.Socket)
			if err != nil {
				return testutil.Stop(err)
			}
			held = append(held, conn)
			return errors.New("status answered with the control socket at its cap")
		}
		errOut = stderr
		return nil
	})
	mustContain(t, "refused CLI", errOut, "too many connections to the control socket")
	// Every held connection was handled before the CLI's: those refused have their 503
	// waiting, the others took the cap, exactly.
	refused := 0
	for _, conn := range held {
		_ = conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if n, _ := conn.Read(make([]byte, 64)); n > 0 {
			refused++
		}
	}
	if accepted := len(held) - refused; accepted != lowControlMax {
		t.Fatalf("%d of %d held connections accepted, want the cap %d", accepted, len(held), lowControlMax)
	}
	closeAll(held)
	held = nil
	testutil.Poll(t, "status after the connections went", 10*time.Second, func() error {
		_, err := n.Status()
		return err
	})
}
