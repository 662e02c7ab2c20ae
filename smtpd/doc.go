// Package smtpd owns the SMTP intake of a node: the listener on --smtp-port, the SMTP
// dialogue (built on github.com/emersion/go-smtp), the relay-domain and size policy, and the
// rule that a message is answered 250 only once the Store has made it durable.
//
// What it guarantees:
//
//   - DATA (or the last BDAT chunk) is answered 250 only after Store.Accept returned nil for
//     the whole message, as the client sent it, byte for byte (dot-unstuffed, nothing
//     added). A transfer that breaks, a Store error, a message over the size limit and a
//     Store that returns without reading the message to its end are never acknowledged.
//   - Recipients outside the relay domains are refused at RCPT with 550 5.7.1; with no relay
//     domains configured (mail/relay_domains) every recipient is refused.
//   - Drain, for a planned stop, closes the listener at once (senders go to the next MX),
//     lets the transactions in flight finish and get their 250 within its bound, answers
//     421 4.3.2 to every other command, then closes as Close does.
//   - The Policy is read afresh at the start of every mail transaction (MAIL FROM), so a
//     change of the replicated configuration applies to the next message.
//   - Close aborts the transfers in flight and waits until no Store.Accept is running, so
//     the caller may close the Store right after it.
//   - At most MaxConnections sessions are open at once, MaxConnectionsPerSource from one
//     client address (Postfix's defaults, 100 and 50); a connection past either cap is
//     answered "421 4.7.0 <host> Too many connections..., try again later" and closed before
//     go-smtp sees it. Refusals are logged as one summary line per interval. A session is
//     closed after ReadTimeout without a command or a byte of data, and after
//     SessionTimeout in all.
//   - A line, of a command or of message data, is at most 2,000 bytes (go-smtp's default,
//     checked by this package on the connection: linelimit.go), BDAT chunks included: no
//     BINARYMIME is offered. A longer line gets 554 5.6.0 in DATA, 500 5.4.0 in a command
//     line or a BDAT chunk, and the connection is closed.
//
// Out of scope: AUTH and STARTTLS (the intake is the inbound MX of the relay domains, not a
// submission service; TLS termination, if wanted, belongs in front of it), delivery, and
// any content filtering. No Received: header is added: the Store gets the data as sent.
//
// The size limit is the Policy's and may change between transactions, while go-smtp's
// MaxMessageBytes is one value per server: so the server runs without it, refuses a MAIL
// FROM whose SIZE= parameter is over the limit, and counts the bytes while streaming DATA,
// answering 552 5.3.4 once the limit is passed. EHLO therefore advertises SIZE without a
// number.
//
// Package smtpd imports go-smtp, hclog, internal/connlimit (a leaf package) and the
// standard library only; it must never import another package of this project (the
// daemon adapts its mail store and configuration to Store and Policy).
package smtpd
