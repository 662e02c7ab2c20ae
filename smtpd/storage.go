package smtpd

import "github.com/emersion/go-smtp"

// errInsufficientStorage is the reply while Config.LowStorage says the node is short of
// disk (RFC 3463 4.3.1, RFC 5321 452): temporary, so senders retry or use another MX.
var errInsufficientStorage = &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 3, 1},
	Message: "Insufficient system storage, please try again later or use another MX"}

// checkStorage refuses the transaction while the node is low on disk.
func (ss *session) checkStorage() error {
	if low := ss.s.cfg.LowStorage; low != nil && low() {
		ss.s.log.Debug("transaction refused: low on disk", "remote", ss.remote)
		return ss.outcome(RefusedStorage, errInsufficientStorage)
	}
	return nil
}

// Listening reports whether the server is open and accepting connections: after Open,
// before Close.
func (s *Server) Listening() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ln != nil && !s.closed
}
