package smtpd

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/emersion/go-smtp"
)

// SMTP replies of the policy and the store. go-smtp writes an *smtp.SMTPError returned by
// a session method as the reply.
var (
	errRelayDenied = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1},
		Message: "relay access denied"}
	// errNoRelayDomains is temporary: a gateway without relay domains is being set up (or
	// is a node still catching up), and the sender's retry must not become a bounce.
	errNoRelayDomains = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0},
		Message: "no relay domains are configured on this gateway yet " +
			"(configuration key mail/relay_domains), please try again later"}
	errNoDomain = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 3},
		Message: "recipient address must carry a domain"}
	errStoreFailed = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0},
		Message: "temporary failure storing the message, please try again later"}
	errShuttingDown = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2},
		Message: "service shutting down, please try again later"}
	errLineTooLong = &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0},
		Message: "message refused: it has a line longer than the SMTP limit"}
	errTransferBroken = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 4, 2},
		Message: "message transfer failed, please try again"}
)

// errTooBig is the reply to a message over the size limit of its transaction.
func errTooBig(limit int64) *smtp.SMTPError {
	return &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 3, 4},
		Message: fmt.Sprintf("message exceeds the size limit of %d bytes", limit)}
}

// session is one SMTP connection. go-smtp calls its methods from the connection's
// goroutine (with BDAT, Data from one more goroutine while the others wait).
type session struct {
	s      *Server
	conn   *trackedConn // nil if go-smtp ever hands over a connection of its own
	remote string

	// The current transaction, from MAIL FROM on.
	from    string
	rcpts   []string
	relay   []string // the Policy's relay domains at MAIL FROM, normalized
	maxSize int64    // the Policy's size limit at MAIL FROM
	// inTx is set from a MAIL FROM that was accepted to the transaction's end; the
	// server counts such sessions, and a drain waits for them (see drain.go). Guarded
	// by the Server's mu.
	inTx bool
}

func (s *Server) newSession(c *smtp.Conn) (smtp.Session, error) {
	select {
	case <-s.closing:
		return nil, errShuttingDown
	default:
	}
	if s.draining.Load() {
		return nil, errShuttingDown // accepted just before the listener closed
	}
	tc, _ := c.Conn().(*trackedConn)
	return &session{s: s, conn: tc, remote: c.Conn().RemoteAddr().String()}, nil
}

// Reset ends the transaction (RSET, a new EHLO, the end of DATA).
func (ss *session) Reset() {
	ss.clear()
	ss.endTx()
}

// clear drops the transaction's state.
func (ss *session) clear() {
	ss.from, ss.rcpts, ss.relay, ss.maxSize = "", nil, nil, 0
}

// Logout is called when the connection closes; nothing is held beyond the transaction.
func (ss *session) Logout() error {
	ss.endTx()
	return nil
}

// Mail starts a transaction: it reads the Policy, and refuses a declared SIZE over the
// limit. from is "" for the null sender <> (bounces).
func (ss *session) Mail(from string, opts *smtp.MailOptions) error {
	ss.Reset()
	if err := ss.checkStorage(); err != nil {
		return err
	}
	if !ss.beginTx() {
		// Draining: no new transaction (a command pipelined before the drain began).
		return ss.outcome(FailedShutdown, errShuttingDown)
	}
	pol := ss.s.cfg.Policy
	ss.relay = normalizeDomains(pol.RelayDomains())
	ss.maxSize = pol.MaxSize()
	if ss.maxSize <= 0 {
		ss.maxSize = DefaultMaxSize
	}
	if opts != nil && opts.Size > ss.maxSize {
		ss.clear()
		ss.endTx()
		return ss.outcome(RefusedTooBig, errTooBig(ss.maxSize))
	}
	ss.from = from
	return nil
}

// Rcpt accepts a recipient of a relay domain.
func (ss *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	if len(ss.relay) == 0 {
		ss.s.log.Debug("recipient refused: no relay domains configured", "to", to, "remote", ss.remote)
		return ss.outcome(RefusedNoRelay, errNoRelayDomains)
	}
	at := strings.LastIndexByte(to, '@')
	if at < 0 || at == len(to)-1 {
		return ss.outcome(RefusedRelay, errNoDomain) // go-smtp refuses such addresses first
	}
	if !relayAllowed(ss.relay, to[at+1:]) {
		ss.s.log.Debug("recipient refused: not a relay domain", "to", to, "remote", ss.remote)
		return ss.outcome(RefusedRelay, errRelayDenied)
	}
	if !slices.Contains(ss.rcpts, to) {
		ss.rcpts = append(ss.rcpts, to)
	}
	return nil
}

// Data streams the message into the Store and answers 250 only once the Store returned
// nil for all of it.
func (ss *session) Data(r io.Reader) error {
	s := ss.s
	if err := ss.checkStorage(); err != nil {
		return err
	}
	if !s.beginAccept() {
		return ss.outcome(FailedShutdown, errShuttingDown)
	}
	defer s.inflight.Done()

	if ss.conn != nil {
		ss.conn.renewDeadlines(s.cfg.ReadTimeout)
		defer ss.conn.renewDeadlines(0)
	}
	dr := &dataReader{r: r, closing: s.closing, max: ss.maxSize}
	id, err := s.cfg.Store.Accept(ss.from, slices.Clone(ss.rcpts), dr)
	complete := dr.eof
	// Read what the Store left, so that the reply comes after the whole message, as
	// SMTP requires (and, with BDAT, after the last chunk).
	dr.drain()

	stored := err == nil
	switch {
	case dr.readErr != nil:
		if stored {
			s.log.Error("the store accepted a message whose transfer failed; it was not acknowledged",
				"id", id, "remote", ss.remote, "read-error", dr.readErr)
		}
		select {
		case <-s.closing:
			s.log.Info("message transfer aborted: shutting down", "remote", ss.remote)
			return ss.outcome(FailedShutdown, errShuttingDown)
		default:
		}
		if errors.Is(dr.readErr, smtp.ErrTooLongLine) {
			// Permanent: resending cannot help. go-smtp then closes the connection.
			s.log.Info("message refused: line too long", "from", displayFrom(ss.from), "remote", ss.remote)
			return ss.outcome(RefusedLongLine, errLineTooLong)
		}
		s.log.Info("message transfer failed", "remote", ss.remote, "error", dr.readErr)
		return ss.outcome(FailedTransfer, errTransferBroken)
	case dr.tooBig:
		if stored {
			s.log.Error("the store accepted a message over the size limit; it was not acknowledged",
				"id", id, "remote", ss.remote)
		}
		s.log.Info("message refused: over the size limit", "from", displayFrom(ss.from),
			"limit", ss.maxSize, "remote", ss.remote)
		return ss.outcome(RefusedTooBig, errTooBig(ss.maxSize))
	case !stored:
		s.log.Warn("storing a message failed; the sender will retry", "from", displayFrom(ss.from),
			"rcpts", len(ss.rcpts), "remote", ss.remote, "error", err)
		return ss.outcome(FailedStore, errStoreFailed)
	case !complete:
		s.log.Error("the store returned before reading the whole message; it was not acknowledged",
			"id", id, "remote", ss.remote)
		return ss.outcome(FailedStore, errStoreFailed)
	}
	s.log.Info("accepted message", "id", id, "from", displayFrom(ss.from), "rcpts", len(ss.rcpts),
		"size", dr.n, "remote", ss.remote)
	// A 250 reply that names the id, for the sender's logs ("queued as").
	return ss.outcome(Accepted, &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: "OK: queued as " + id})
}

// outcome tells Config.Observe of o and returns reply, the SMTP reply that goes with it.
func (ss *session) outcome(o Outcome, reply *smtp.SMTPError) error {
	if obs := ss.s.cfg.Observe; obs != nil {
		obs(o)
	}
	return reply
}

// dataReader is the reader handed to the Store: it counts the bytes against the size
// limit, fails at once when the server closes, and records how the transfer ended.
type dataReader struct {
	r       io.Reader
	closing <-chan struct{}
	max     int64

	n       int64 // bytes read
	eof     bool  // the end of the data was reached
	tooBig  bool  // more than max bytes came
	readErr error // the transfer broke (connection error, closing)
}

// errAborted is what the Store reads once the server is closing.
var errAborted = errors.New("smtpd: transfer aborted: server closing")

func (d *dataReader) Read(p []byte) (int, error) {
	switch {
	case d.readErr != nil:
		return 0, d.readErr
	case d.tooBig:
		return 0, errTooBig(d.max)
	case d.eof:
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	// Read at most one byte past the limit: enough to tell that it is passed.
	if rem := d.max - d.n + 1; int64(len(p)) > rem {
		p = p[:rem]
	}
	n, err := d.read(p)
	d.n += int64(n)
	if d.n > d.max {
		d.tooBig = true
		return 0, errTooBig(d.max)
	}
	return n, err
}

// read reads from the client and records how the data ended.
func (d *dataReader) read(p []byte) (int, error) {
	select {
	case <-d.closing:
		d.readErr = errAborted
		return 0, d.readErr
	default:
	}
	n, err := d.r.Read(p)
	switch {
	case err == io.EOF:
		d.eof = true
	case err != nil:
		d.readErr = err
	}
	return n, err
}

// drain reads and drops the rest of the data, if the transfer is still intact.
func (d *dataReader) drain() {
	if d.eof || d.readErr != nil {
		return // the usual case: the store read it all (no 32 KiB buffer per message)
	}
	buf := make([]byte, 32*1024)
	for !d.eof && d.readErr == nil {
		d.read(buf)
	}
}

// normalizeDomains lower-cases the relay domains and drops their trailing dots and the
// entries that could match nothing or everything ("", ".").
func normalizeDomains(in []string) []string {
	out := make([]string, 0, len(in))
	for _, d := range in {
		d = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(d)), ".")
		if strings.TrimPrefix(d, ".") == "" || strings.ContainsAny(d, "@ \t") {
			continue
		}
		out = append(out, d)
	}
	return out
}

// relayAllowed says whether domain is one of the normalized relay domains: an exact match,
// or a subdomain of an entry that starts with ".".
func relayAllowed(relay []string, domain string) bool {
	domain = strings.TrimSuffix(strings.ToLower(domain), ".")
	if domain == "" {
		return false
	}
	for _, e := range relay {
		if e[0] == '.' {
			if strings.HasSuffix(domain, e) && len(domain) > len(e) {
				return true
			}
		} else if domain == e {
			return true
		}
	}
	return false
}

// displayFrom shows the null sender as <>.
func displayFrom(from string) string {
	if from == "" {
		return "<>"
	}
	return from
}
