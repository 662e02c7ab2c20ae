package integration

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/smtp"
	"net/textproto"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/internal/testutil"
)

// mailDomain is the relay domain of the mail tests; mailFrom the envelope sender.
const (
	mailDomain = "example.com"
	mailFrom   = "sender@outside.test"
)

// mailCluster is a cluster whose nodes take SMTP on SMTPPort of their own address.
type mailCluster struct {
	*Cluster
	SMTPPort int
}

// newMailCluster prepares n nodes (not started) with SMTP intake on a port free on every
// node's address, and with --fault-injection when faults is set.
func newMailCluster(t testing.TB, n int, faults bool) *mailCluster {
	t.Helper()
	c := newCluster(t, n)
	var ips []string
	for _, node := range c.Nodes {
		ips = append(ips, node.IP)
	}
	port := testutil.FreePort(t, ips) // never c.Port: FreePort hands out a port once
	for _, node := range c.Nodes {
		node.ExtraArgs = append(node.ExtraArgs, "--smtp-port", strconv.Itoa(port))
		if faults {
			node.ExtraArgs = append(node.ExtraArgs, "--fault-injection")
		}
	}
	return &mailCluster{Cluster: c, SMTPPort: port}
}

// addr is node n's SMTP address.
func (mc *mailCluster) addr(n *Node) string {
	return net.JoinHostPort(n.IP, strconv.Itoa(mc.SMTPPort))
}

// formNodes forms a cluster of the first k nodes only (the others stay unstarted).
func (mc *mailCluster) formNodes(k int) {
	mc.t.Helper()
	all := mc.Nodes
	mc.Nodes = all[:k]
	defer func() { mc.Nodes = all }()
	mc.form()
}

// formMailNodes forms a cluster of the first k nodes, as formNodes does, sets the relay
// domains of the test's mail on it, and returns those k nodes.
func (mc *mailCluster) formMailNodes(k int) []*Node {
	mc.t.Helper()
	mc.formNodes(k)
	nodes := mc.Nodes[:k]
	setConfig(mc.t, nodes, keyRelayDomains, mailDomain)
	return nodes
}

// setConfig sets key to val through nodes[0] and waits until every one of nodes reads it
// (SMTP policy is read from each node's own replica).
func setConfig(t testing.TB, nodes []*Node, key, val string) {
	t.Helper()
	cliRetry(t, nodes[0], "config", "set", key, val)
	for _, n := range nodes {
		testutil.Poll(t, n.Name+" reads "+key, 15*time.Second, func() error {
			got, _, err := n.run("config", "get", key)
			if err != nil {
				return err
			}
			if got != val {
				return fmt.Errorf("%s = %q, want %q", key, got, val)
			}
			return nil
		})
	}
}

// mailMsg builds a message with CRLF line endings (stored byte-exact, so its SHA-256 is
// known in advance) of at least size bytes, whose Subject is subject.
func mailMsg(subject string, size int) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: <%s>\r\nTo: <user@%s>\r\nSubject: %s\r\nMessage-ID: <%s@pmgcm.test>\r\n\r\n",
		mailFrom, mailDomain, subject, subject)
	const line = "The quick brown fox jumps over the lazy dog; 0123456789 abcdefghijklmnopq\r\n"
	for i := 0; b.Len() < size; i++ {
		fmt.Fprintf(&b, "%06d %s", i, line)
	}
	if b.Len() < size || bytes.HasSuffix(b.Bytes(), []byte("\r\n\r\n")) {
		b.WriteString("end\r\n")
	}
	return b.Bytes()
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// smtpCode returns the SMTP reply code of err, 0 when err is no SMTP reply.
func smtpCode(err error) int {
	var te *textproto.Error
	if errors.As(err, &te) {
		return te.Code
	}
	return 0
}

// smtpConn is one SMTP client connection that can carry several transactions.
type smtpConn struct {
	conn net.Conn
	c    *smtp.Client
}

// dialSMTP connects and says EHLO.
func dialSMTP(addr string) (*smtpConn, error) {
	conn, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		return nil, err
	}
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	host, _, _ := net.SplitHostPort(addr)
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		conn.Close()
		return nil, err
	}
	if err := c.Hello("client.pmgcm.test"); err != nil {
		conn.Close()
		return nil, err
	}
	return &smtpConn{conn: conn, c: c}, nil
}

// send runs one transaction: nil means the server answered 250 to the end of DATA.
func (s *smtpConn) send(to []string, msg []byte) error {
	_ = s.conn.SetDeadline(time.Now().Add(30 * time.Second))
	if err := s.c.Mail(mailFrom); err != nil {
		return err
	}
	for _, r := range to {
		if err := s.c.Rcpt(r); err != nil {
			return err
		}
	}
	w, err := s.c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(msg); err != nil {
		return err
	}
	return w.Close()
}

func (s *smtpConn) close() {
	if s != nil {
		_ = s.conn.Close()
	}
}

// sendOne sends msg in a connection of its own.
func sendOne(addr string, to []string, msg []byte) error {
	s, err := dialSMTP(addr)
	if err != nil {
		return err
	}
	defer s.close()
	if err := s.send(to, msg); err != nil {
		return err
	}
	_ = s.c.Quit()
	return nil
}

func mustSend(t testing.TB, addr string, msg []byte) {
	t.Helper()
	if err := sendOne(addr, []string{"user@" + mailDomain}, msg); err != nil {
		t.Fatalf("send to %s: %v", addr, err)
	}
}

// quarantine lists node n's messages in state (""; every state but deleted).
func quarantine(n *Node, state string) ([]api.QuarantineMessage, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return n.API().QuarantineList(ctx, "", "", state)
}

// showMsg returns the message id as node n serves it (checked against its SHA-256 by
// the client).
func showMsg(n *Node, id string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b, _, err := n.API().QuarantineShow(ctx, id)
	return b, err
}

// mailStatusOf returns n's own state and mail status.
func mailStatusOf(n *Node) (string, api.MailStatus, error) {
	st, err := n.Status()
	if err != nil {
		return "", api.MailStatus{}, err
	}
	r := localRow(st)
	if r == nil {
		return "", api.MailStatus{}, fmt.Errorf("%s: no local row", n.Name)
	}
	if r.Mail == nil {
		return r.State, api.MailStatus{}, fmt.Errorf("%s: no mail in status", n.Name)
	}
	return r.State, *r.Mail, nil
}

// checkHas compares n's quarantine with want (subject -> SHA-256): every subject must be
// listed, and every listed copy of it must have the wanted checksum (duplicates from
// retries are fine). fatal is set for a mismatch that waiting cannot mend.
func checkHas(n *Node, want map[string]string) (err error, fatal bool) {
	list, err := quarantine(n, "")
	if err != nil {
		return err, false
	}
	seen := map[string]bool{}
	for _, m := range list {
		w, ok := want[m.Subject]
		if !ok {
			continue
		}
		if m.SHA256 != w {
			return fmt.Errorf("%s: message %s (%q) has sha256 %s, sent %s", n.Name, m.ID, m.Subject, m.SHA256, w), true
		}
		seen[m.Subject] = true
	}
	var missing []string
	for s := range want {
		if !seen[s] {
			missing = append(missing, s)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		if len(missing) > 5 {
			missing = append(missing[:5], "...")
		}
		return fmt.Errorf("%s: %d of %d messages missing (%d listed): %s", n.Name, len(want)-len(seen),
			len(want), len(list), strings.Join(missing, " ")), false
	}
	return nil, false
}

// waitMail waits until every one of nodes lists every wanted message with its checksum
// and has a zero mail backlog (every body is there).
func waitMail(t testing.TB, nodes []*Node, want map[string]string, timeout time.Duration) {
	t.Helper()
	for _, n := range nodes {
		testutil.Poll(t, n.Name+" has every message", timeout, func() error {
			err, fatal := checkHas(n, want)
			if fatal {
				t.Fatal(err)
			}
			if err != nil {
				return err
			}
			_, ms, err := mailStatusOf(n)
			if err != nil {
				return err
			}
			if ms.BacklogMessages != 0 || ms.BacklogBytes != 0 {
				return fmt.Errorf("%s: backlog %d messages %d bytes", n.Name, ms.BacklogMessages, ms.BacklogBytes)
			}
			return nil
		})
	}
}

// sameQuarantine waits until every one of nodes lists the same messages (id, sha256,
// state) and returns that list.
func sameQuarantine(t testing.TB, nodes []*Node, timeout time.Duration) []api.QuarantineMessage {
	t.Helper()
	var out []api.QuarantineMessage
	testutil.Poll(t, "every node lists the same quarantine", timeout, func() error {
		var first string
		for i, n := range nodes {
			list, err := quarantine(n, "")
			if err != nil {
				return err
			}
			var rows []string
			for _, m := range list {
				rows = append(rows, m.ID+" "+m.SHA256+" "+m.State)
			}
			sort.Strings(rows)
			s := strings.Join(rows, "\n")
			if i == 0 {
				first, out = s, list
			} else if s != first {
				return fmt.Errorf("%s lists %d messages, %s %d", nodes[0].Name, len(out), n.Name, len(list))
			}
		}
		return nil
	})
	return out
}

// idOf returns the ID of the message with subject on n, polling until it is listed.
func idOf(t testing.TB, n *Node, subject string, timeout time.Duration) string {
	t.Helper()
	var id string
	testutil.Poll(t, n.Name+" lists "+subject, timeout, func() error {
		list, err := quarantine(n, "")
		if err != nil {
			return err
		}
		for _, m := range list {
			if m.Subject == subject {
				id = m.ID
				return nil
			}
		}
		return fmt.Errorf("not listed among %d", len(list))
	})
	return id
}

// waitBody waits until n serves message id byte-exact as want.
func waitBody(t testing.TB, n *Node, id string, want []byte, timeout time.Duration) {
	t.Helper()
	testutil.Poll(t, n.Name+" serves the body of "+id, timeout, func() error {
		got, err := showMsg(n, id)
		if err != nil {
			return err
		}
		if !bytes.Equal(got, want) {
			return fmt.Errorf("%s serves %d bytes sha256 %s, want %d bytes sha256 %s", n.Name, len(got), sha(got), len(want), sha(want))
		}
		return nil
	})
}

// bodyFile finds the body file of id under n's data directory.
func bodyFile(t testing.TB, n *Node, id string) string {
	t.Helper()
	var found string
	_ = filepath.Walk(filepath.Join(n.DataDir, "mail", "bodies"), func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() && info.Name() == id {
			found = p
		}
		return nil
	})
	if found == "" {
		t.Fatalf("no body file of %s under %s", id, n.DataDir)
	}
	return found
}

// smtpDialog speaks raw SMTP: it sends each line and returns the reply to it (the
// greeting first).
func smtpDialog(t testing.TB, addr string, lines ...string) []string {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	r := textproto.NewReader(bufio.NewReader(conn))
	read := func() string {
		code, msg, err := r.ReadResponse(0)
		if err != nil && code == 0 {
			return "error: " + err.Error()
		}
		return fmt.Sprintf("%d %s", code, msg)
	}
	out := []string{read()}
	for _, l := range lines {
		if _, err := conn.Write([]byte(l + "\r\n")); err != nil {
			out = append(out, "write error: "+err.Error())
			break
		}
		out = append(out, read())
	}
	return out
}
