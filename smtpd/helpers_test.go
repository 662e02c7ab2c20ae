package smtpd

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/smtp"
	"net/textproto"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pmgcm/pmgcm/internal/testutil"
)

// storedMsg is one message the fake store kept.
type storedMsg struct {
	from string
	to   []string
	data []byte
}

// fakeStore keeps messages in memory. It can be told to fail, or to block after reading
// a message until released.
type fakeStore struct {
	mu     sync.Mutex
	msgs   map[string]storedMsg
	nextID int
	// fail, when set, is returned by Accept after reading the message.
	fail error
	// block, when set, makes Accept wait for it to be closed after reading the message.
	block chan struct{}
	// started gets a value (if there is room) each time Accept begins, and read each
	// time it has read a whole message.
	started, read chan struct{}
	// aborted counts the Accept calls whose reader failed.
	aborted int
	// readErrs records those reader errors.
	readErrs []error
}

func newFakeStore() *fakeStore {
	return &fakeStore{msgs: map[string]storedMsg{}, started: make(chan struct{}, 100), read: make(chan struct{}, 100)}
}

func (f *fakeStore) Accept(from string, to []string, r io.Reader) (string, error) {
	select {
	case f.started <- struct{}{}:
	default:
	}
	data, err := io.ReadAll(r)
	f.mu.Lock()
	block, fail := f.block, f.fail
	if err != nil {
		f.aborted++
		f.readErrs = append(f.readErrs, err)
		f.mu.Unlock()
		return "", fmt.Errorf("reading message: %w", err)
	}
	f.mu.Unlock()
	select {
	case f.read <- struct{}{}:
	default:
	}
	if block != nil {
		<-block
	}
	if fail != nil {
		return "", fail
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nextID++
	id := fmt.Sprintf("m%04d", f.nextID)
	f.msgs[id] = storedMsg{from: from, to: to, data: data}
	return id, nil
}

func (f *fakeStore) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.msgs)
}

func (f *fakeStore) abortedCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.aborted
}

func (f *fakeStore) get(id string) (storedMsg, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m, ok := f.msgs[id]
	return m, ok
}

// all returns the stored messages.
func (f *fakeStore) all() []storedMsg {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []storedMsg
	for _, m := range f.msgs {
		out = append(out, m)
	}
	return out
}

// fakePolicy is a Policy the test can change while the server runs.
type fakePolicy struct {
	mu      sync.Mutex
	domains []string
	max     int64
}

func (p *fakePolicy) RelayDomains() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.domains...)
}

func (p *fakePolicy) MaxSize() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.max
}

func (p *fakePolicy) set(domains []string, max int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.domains, p.max = domains, max
}

// testServer is a running Server with its fakes.
type testServer struct {
	*Server
	store  *fakeStore
	policy *fakePolicy
	addr   string
	logs   *syncBuffer
	// outcomes is what Config.Observe was told.
	outcomes *outcomeLog
}

// outcomeLog records the outcomes a Server reports.
type outcomeLog struct {
	mu  sync.Mutex
	got map[Outcome]int
}

func (l *outcomeLog) add(o Outcome) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.got[o]++
}

func (l *outcomeLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return fmt.Sprint(l.got)
}

// wantOutcomes waits until the server has reported exactly want (Observe is called before
// the reply is written, but a broken transfer is seen by the server only after the client).
func (ts *testServer) wantOutcomes(t *testing.T, want map[Outcome]int) {
	t.Helper()
	ws := fmt.Sprint(want)
	testutil.Poll(t, "outcomes "+ws, 5*time.Second, func() error {
		if got := ts.outcomes.String(); got != ws {
			return fmt.Errorf("outcomes %s", got)
		}
		return nil
	})
}

// syncBuffer is a bytes.Buffer safe for concurrent use, to capture logs.
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

// startServer runs a Server on 127.0.0.1:0 relaying example.com and .example.org, with a
// 64 KiB limit; edit changes the config before New.
func startServer(t *testing.T, edit func(*Config)) *testServer {
	t.Helper()
	ts := &testServer{store: newFakeStore(), logs: &syncBuffer{},
		policy: &fakePolicy{domains: []string{"example.com", ".example.org"}, max: 64 << 10}}
	cfg := DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.Hostname = "mx1.example.com"
	cfg.Store, cfg.Policy = ts.store, ts.policy
	ts.outcomes = &outcomeLog{got: map[Outcome]int{}}
	cfg.Observe = ts.outcomes.add
	cfg.Logger = hclog.New(&hclog.LoggerOptions{Output: ts.logs, Level: hclog.Debug})
	cfg.ReadTimeout = 10 * time.Second
	cfg.WriteTimeout = 10 * time.Second
	if edit != nil {
		edit(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ts.Server, ts.addr = s, s.Addr().String()
	return ts
}

// send sends one message with net/smtp and returns the error of the step that failed.
func send(addr, from string, to []string, msg []byte) error {
	c, err := smtp.Dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Hello("client.example.net"); err != nil {
		return err
	}
	if err := sendOn(c, from, to, msg); err != nil {
		return err
	}
	return c.Quit()
}

// sendOn sends one message on an open client.
func sendOn(c *smtp.Client, from string, to []string, msg []byte) error {
	if err := c.Mail(from); err != nil {
		return err
	}
	for _, r := range to {
		if err := c.Rcpt(r); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(msg); err != nil {
		return err
	}
	return w.Close()
}

// smtpCode returns the reply code of an error of net/smtp or textproto, 0 if none.
func smtpCode(err error) int {
	var te *textproto.Error
	if errors.As(err, &te) {
		return te.Code
	}
	return 0
}

// rawClient speaks SMTP line by line, for what net/smtp would not send.
type rawClient struct {
	t    *testing.T
	conn net.Conn
	tp   *textproto.Conn
}

func dialRaw(t *testing.T, addr string) *rawClient {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	rc := &rawClient{t: t, conn: conn, tp: textproto.NewConn(conn)}
	t.Cleanup(func() { conn.Close() })
	if code, msg := rc.reply(); code != 220 {
		t.Fatalf("greeting %d %s", code, msg)
	}
	return rc
}

// reply reads one (possibly multi-line) reply.
func (rc *rawClient) reply() (int, string) {
	rc.t.Helper()
	code, msg, err := rc.tp.ReadResponse(0)
	if err != nil && code == 0 {
		rc.t.Fatalf("reading reply: %v", err)
	}
	return code, msg
}

// cmd sends a line and reads the reply.
func (rc *rawClient) cmd(line string) (int, string) {
	rc.t.Helper()
	if err := rc.tp.PrintfLine("%s", line); err != nil {
		rc.t.Fatalf("sending %q: %v", line, err)
	}
	return rc.reply()
}

// expect sends a line and fails unless the reply has the code.
func (rc *rawClient) expect(line string, want int) string {
	rc.t.Helper()
	code, msg := rc.cmd(line)
	if code != want {
		rc.t.Fatalf("%q: got %d %s, want %d", line, code, msg, want)
	}
	return msg
}

// begin opens a transaction from a@example.net to rcpts (b@example.com when none),
// each command answered 250.
func (rc *rawClient) begin(rcpts ...string) {
	rc.t.Helper()
	if len(rcpts) == 0 {
		rcpts = []string{"b@example.com"}
	}
	rc.expect("EHLO c", 250)
	rc.expect("MAIL FROM:<a@example.net>", 250)
	for _, r := range rcpts {
		rc.expect("RCPT TO:<"+r+">", 250)
	}
}

// crlf turns LF line ends into CRLF.
func crlf(s string) []byte { return []byte(strings.ReplaceAll(s, "\n", "\r\n")) }
