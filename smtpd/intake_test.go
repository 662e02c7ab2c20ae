package smtpd

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/smtp"
	"net/textproto"
	"strconv"
	"strings"
	"testing"
	"time"
)

// testMessage has a dot-stuffed line, 8-bit bytes and a blank line; its lines end in CRLF,
// so net/smtp sends it unchanged.
var testMessage = crlf("From: alice@example.net\nTo: bob@example.com\nSubject: hi\n\n" +
	"body line\n.line that starts with a dot\n..two dots\n8-bit: \xc3\xa9\xff\n\nlast\n")

func TestAccept(t *testing.T) {
	ts := startServer(t, nil)
	to := []string{"bob@example.com", "Carol@SUB.Example.ORG"}
	if err := send(ts.addr, "alice@example.net", to, testMessage); err != nil {
		t.Fatalf("send: %v", err)
	}
	msgs := ts.store.all()
	if len(msgs) != 1 {
		t.Fatalf("stored %d messages", len(msgs))
	}
	m := msgs[0]
	if !bytes.Equal(m.data, testMessage) {
		t.Errorf("stored %q\nwant   %q", m.data, testMessage)
	}
	if m.from != "alice@example.net" || strings.Join(m.to, ",") != strings.Join(to, ",") {
		t.Errorf("envelope = %q -> %q", m.from, m.to)
	}
	logs := ts.logs.String()
	for _, want := range []string{"accepted message", "id=m0001", "from=alice@example.net", "rcpts=2",
		"size=" + strconv.Itoa(len(testMessage))} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
	ts.wantOutcomes(t, map[Outcome]int{Accepted: 1})
}

// TestAcceptReply checks the greeting and the 250 reply, which names the id.
func TestAcceptReply(t *testing.T) {
	ts := startServer(t, nil)
	rc := dialRaw(t, ts.addr)
	ehlo := rc.expect("EHLO client.example.net", 250)
	if !strings.Contains(ehlo, "SIZE") || strings.Contains(ehlo, "AUTH") || strings.Contains(ehlo, "STARTTLS") {
		t.Errorf("EHLO = %q", ehlo)
	}
	rc.expect("MAIL FROM:<>", 250) // null sender: a bounce
	rc.expect("RCPT TO:<postmaster@example.com>", 250)
	rc.expect("DATA", 354)
	msg := rc.expect("Subject: bounce\r\n\r\nx\r\n.", 250)
	if msg != "2.0.0 OK: queued as m0001" {
		t.Errorf("250 reply = %q", msg)
	}
	m, ok := ts.store.get("m0001")
	if !ok || m.from != "" || string(m.data) != "Subject: bounce\r\n\r\nx\r\n" {
		t.Errorf("stored %+v %v", m, ok)
	}
	rc.expect("QUIT", 221)
}

func TestGreeting(t *testing.T) {
	ts := startServer(t, nil)
	conn, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	line, err := textproto.NewReader(bufio.NewReader(conn)).ReadLine()
	if err != nil || line != "220 mx1.example.com ESMTP Service Ready" {
		t.Errorf("greeting %q, %v", line, err)
	}
}

func TestRelayRefused(t *testing.T) {
	ts := startServer(t, nil)
	c, err := smtp.Dial(ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Mail("spammer@example.net"); err != nil {
		t.Fatal(err)
	}
	for _, to := range []string{"victim@elsewhere.test", "x@example.org", "x@notexample.com",
		"x@example.com.evil.test", "x@sub.example.com"} {
		err := c.Rcpt(to)
		if smtpCode(err) != 550 || !strings.Contains(err.Error(), "5.7.1 relay access denied") {
			t.Errorf("RCPT %s: %v, want 550 5.7.1", to, err)
		}
	}
	if err := c.Rcpt("nodomain"); smtpCode(err)/100 != 5 {
		t.Errorf("RCPT without domain: %v", err)
	}
	// A recipient of the relay domains still goes through on the same transaction.
	if err := c.Rcpt("ok@EXAMPLE.com"); err != nil {
		t.Errorf("RCPT of a relay domain: %v", err)
	}
	if ts.store.count() != 0 {
		t.Error("something was stored")
	}
	ts.wantOutcomes(t, map[Outcome]int{RefusedRelay: 5})
}

func TestRelayUnconfigured(t *testing.T) {
	ts := startServer(t, nil)
	ts.policy.set(nil, 0)
	err := send(ts.addr, "a@example.net", []string{"bob@example.com"}, testMessage)
	if smtpCode(err) != 451 || !strings.Contains(err.Error(), "4.3.0") ||
		!strings.Contains(err.Error(), "no relay domains are configured") || !strings.Contains(err.Error(), "mail/relay_domains") {
		t.Errorf("send with no relay domains: %v", err)
	}
	// Entries that match nothing, or would match everything, count as none.
	ts.policy.set([]string{"", " . ", "."}, 0)
	if err := send(ts.addr, "a@example.net", []string{"bob@example.com"}, testMessage); smtpCode(err) != 451 {
		t.Errorf("send with only empty relay domains: %v", err)
	}
	// The policy is read per transaction: configuring it lets the next message in.
	ts.policy.set([]string{"Example.COM."}, 0)
	if err := send(ts.addr, "a@example.net", []string{"bob@example.com"}, testMessage); err != nil {
		t.Errorf("send after configuring: %v", err)
	}
	ts.wantOutcomes(t, map[Outcome]int{RefusedNoRelay: 2, Accepted: 1})
}

func TestRelayAllowed(t *testing.T) {
	relay := normalizeDomains([]string{"Example.com", ".example.org.", " mail.test "})
	for _, tt := range []struct {
		domain string
		want   bool
	}{
		{"example.com", true},
		{"EXAMPLE.COM", true},
		{"example.com.", true},
		{"sub.example.com", false},
		{"example.org", false},
		{"a.example.org", true},
		{"a.b.example.org", true},
		{"badexample.org", false},
		{"mail.test", true},
		{"", false},
		{"[127.0.0.1]", false},
	} {
		if got := relayAllowed(relay, tt.domain); got != tt.want {
			t.Errorf("relayAllowed(%q) = %v, want %v", tt.domain, got, tt.want)
		}
	}
}

func TestOverSize(t *testing.T) {
	ts := startServer(t, nil)
	ts.policy.set([]string{"example.com"}, 1000)
	c, err := smtp.Dial(ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	big := bytes.Repeat(crlf("0123456789012345678901234567890123456789\n"), 100)
	err = sendOn(c, "a@example.net", []string{"bob@example.com"}, big)
	if smtpCode(err) != 552 || !strings.Contains(err.Error(), "5.3.4") {
		t.Fatalf("oversized message: %v, want 552 5.3.4", err)
	}
	// The connection is still in step: a small message goes through on it.
	if err := sendOn(c, "a@example.net", []string{"bob@example.com"}, crlf("small\n")); err != nil {
		t.Fatalf("small message after the big one: %v", err)
	}
	if n := ts.store.count(); n != 1 {
		t.Errorf("stored %d messages, want 1", n)
	}
	// Exactly at the limit is accepted.
	exact := append(bytes.Repeat([]byte("x"), 998), '\r', '\n')
	if err := sendOn(c, "a@example.net", []string{"bob@example.com"}, exact); err != nil {
		t.Errorf("message of exactly the limit: %v", err)
	}

	// A declared SIZE over the limit is refused at MAIL FROM.
	rc := dialRaw(t, ts.addr)
	rc.expect("EHLO c", 250)
	if code, msg := rc.cmd("MAIL FROM:<a@example.net> SIZE=1001"); code != 552 || !strings.HasPrefix(msg, "5.3.4") {
		t.Errorf("MAIL SIZE=1001: %d %s", code, msg)
	}
	rc.expect("MAIL FROM:<a@example.net> SIZE=1000", 250)
	ts.wantOutcomes(t, map[Outcome]int{RefusedTooBig: 2, Accepted: 2})
}

func TestStoreError(t *testing.T) {
	ts := startServer(t, nil)
	ts.store.fail = errors.New("disk full")
	err := send(ts.addr, "a@example.net", []string{"bob@example.com"}, testMessage)
	if smtpCode(err) != 451 || !strings.Contains(err.Error(), "4.3.0") {
		t.Errorf("send with a failing store: %v, want 451 4.3.0", err)
	}
	if !strings.Contains(ts.logs.String(), "disk full") {
		t.Errorf("the store error is not logged:\n%s", ts.logs.String())
	}
	ts.wantOutcomes(t, map[Outcome]int{FailedStore: 1})
}

func TestStoreShortRead(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.Store = lazyStore{} })
	err := send(ts.addr, "a@example.net", []string{"bob@example.com"}, testMessage)
	if smtpCode(err) != 451 {
		t.Errorf("send to a store that reads nothing: %v, want 451", err)
	}
}

// lazyStore reads a few bytes and claims success: a bug smtpd must not acknowledge.
type lazyStore struct{}

func (lazyStore) Accept(_ string, _ []string, r io.Reader) (string, error) {
	r.Read(make([]byte, 4))
	return "lazy", nil
}

func TestGarbageCommands(t *testing.T) {
	ts := startServer(t, nil)
	for _, tt := range []struct {
		line string
		want int
	}{
		{"FROBNICATE", 501},
		{"FROB", 500},
		{"", 500},
		{"\x00\xff\xfe binary", 501},
		{"MAIL", 501},
		{"MAIL FROM:<unterminated", 501},
		{"MAIL FROM:<a@example.net> BOGUS=1", 500},
		{"RCPT TO:<bob@example.com>", 502}, // before MAIL
		{"DATA", 502},                      // before RCPT
		{"DATA now", 501},
		{"BDAT 10", 502},
		{"AUTH PLAIN AGFhAGI=", 523},
		{"STARTTLS", 502},
		{"HELO", 501},
		{"RCPT TO:<" + strings.Repeat("a", 3000) + "@example.com>", 500}, // over the line limit
	} {
		rc := dialRaw(t, ts.addr)
		rc.expect("EHLO client.example.net", 250)
		if code, msg := rc.cmd(tt.line); code != tt.want {
			t.Errorf("%.40q: %d %s, want %d", tt.line, code, msg, tt.want)
		}
		rc.conn.Close()
	}
	// Too many errors close the connection; the server stays up.
	rc := dialRaw(t, ts.addr)
	for range 4 {
		rc.cmd("BOGUS")
	}
	if err := send(ts.addr, "a@example.net", []string{"bob@example.com"}, testMessage); err != nil {
		t.Fatalf("send after the garbage: %v", err)
	}
	if n := ts.store.count(); n != 1 {
		t.Errorf("stored %d messages, want 1", n)
	}
}

func TestLongLineInData(t *testing.T) {
	ts := startServer(t, nil)
	rc := dialRaw(t, ts.addr)
	rc.begin()
	rc.expect("DATA", 354)
	if _, err := rc.conn.Write([]byte(strings.Repeat("x", 5000) + "\r\n.\r\n")); err != nil {
		t.Fatal(err)
	}
	if code, msg := rc.reply(); code != 554 || !strings.HasPrefix(msg, "5.6.0") {
		t.Errorf("line of 5000 bytes: %d %s, want 554 5.6.0", code, msg)
	}
	if ts.store.count() != 0 {
		t.Error("stored a message with an over-long line")
	}
	ts.wantOutcomes(t, map[Outcome]int{RefusedLongLine: 1})
}

// A line of data at the limit is taken; a command line over it gets 500 and the
// connection closes, before the server buffers more of it.
func TestLongCommandLine(t *testing.T) {
	ts := startServer(t, nil)
	rc := dialRaw(t, ts.addr)
	rc.begin()
	rc.expect("DATA", 354)
	body := "Subject: x\r\n\r\n" + strings.Repeat("y", maxLineLength-2) + "\r\n.\r\n"
	if _, err := rc.conn.Write([]byte(body)); err != nil {
		t.Fatal(err)
	}
	if code, msg := rc.reply(); code != 250 {
		t.Fatalf("line of %d bytes: %d %s, want 250", maxLineLength-1, code, msg)
	}
	if code, msg := rc.cmd("NOOP " + strings.Repeat("z", 2*maxLineLength)); code != 500 || !strings.HasPrefix(msg, "5.4.0") {
		t.Errorf("command line of %d bytes: %d %s, want 500 5.4.0", 2*maxLineLength, code, msg)
	}
	if _, err := rc.tp.ReadLine(); err == nil {
		t.Error("the connection stayed open after a too-long command line")
	}
}

// The limit holds inside BDAT chunks: the intake offers no BINARYMIME.
func TestLongLineInBDAT(t *testing.T) {
	ts := startServer(t, nil)
	rc := dialRaw(t, ts.addr)
	rc.begin()
	chunk := "Subject: x\r\n\r\n" + strings.Repeat("x", 3*maxLineLength) + "\r\n"
	if _, err := fmt.Fprintf(rc.conn, "BDAT %d LAST\r\n%s", len(chunk), chunk); err != nil {
		t.Fatal(err)
	}
	if code, msg := rc.reply(); code/100 != 5 {
		t.Errorf("BDAT with a line of %d bytes: %d %s, want 5xx", 3*maxLineLength, code, msg)
	}
	if ts.store.count() != 0 {
		t.Error("stored a message with an over-long line")
	}
}

func TestMaxRecipients(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.MaxRecipients = 2 })
	rc := dialRaw(t, ts.addr)
	rc.begin("a@example.com", "b@example.com")
	if code, _ := rc.cmd("RCPT TO:<c@example.com>"); code != 452 {
		t.Errorf("third recipient: %d, want 452", code)
	}
}

// TestSlowSender sends the data in pieces slower, in total, than ReadTimeout: the
// timeout bounds a stall, not the transfer.
func TestSlowSender(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.ReadTimeout = 300 * time.Millisecond })
	rc := dialRaw(t, ts.addr)
	rc.begin()
	rc.expect("DATA", 354)
	for range 8 {
		if _, err := rc.conn.Write([]byte("a slow line\r\n")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond) // the client's pace, not a wait for the server
	}
	rc.expect(".", 250)

	// An idle client is cut off.
	rc = dialRaw(t, ts.addr)
	if code, _ := rc.reply(); code != 421 {
		t.Errorf("idle client: %d, want 421", code)
	}
}

// TestBDAT sends with CHUNKING (RFC 3030), which go-smtp always offers.
func TestBDAT(t *testing.T) {
	ts := startServer(t, nil)
	ts.policy.set([]string{"example.com"}, 100)
	rc := dialRaw(t, ts.addr)
	rc.expect("EHLO c", 250)
	chunk := func(data string, last bool) (int, string) {
		t.Helper()
		line := "BDAT " + strconv.Itoa(len(data))
		if last {
			line += " LAST"
		}
		if _, err := rc.conn.Write([]byte(line + "\r\n" + data)); err != nil {
			t.Fatal(err)
		}
		return rc.reply()
	}
	rc.expect("MAIL FROM:<a@example.net>", 250)
	rc.expect("RCPT TO:<b@example.com>", 250)
	if code, _ := chunk("Subject: chunked\r\n\r\n", false); code != 250 {
		t.Fatalf("first chunk: %d", code)
	}
	if code, msg := chunk(".no dot-stuffing in BDAT\r\n", true); code != 250 || !strings.Contains(msg, "queued as m0001") {
		t.Fatalf("last chunk: %d %s", code, msg)
	}
	if m, _ := ts.store.get("m0001"); string(m.data) != "Subject: chunked\r\n\r\n.no dot-stuffing in BDAT\r\n" {
		t.Errorf("stored %q", m.data)
	}

	// Over the limit across chunks: 552 at the last chunk, nothing stored.
	rc.expect("MAIL FROM:<a@example.net>", 250)
	rc.expect("RCPT TO:<b@example.com>", 250)
	chunk(strings.Repeat("x", 60), false)
	if code, msg := chunk(strings.Repeat("y", 60), true); code != 552 || !strings.HasPrefix(msg, "5.3.4") {
		t.Errorf("oversized BDAT message: %d %s", code, msg)
	}
	if n := ts.store.count(); n != 1 {
		t.Errorf("stored %d messages, want 1", n)
	}
	rc.expect("NOOP", 250) // still in step
}
