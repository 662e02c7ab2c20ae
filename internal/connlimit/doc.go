// Package connlimit bounds the connections of a listener: a global cap and a cap per source
// address on the connections open at once, an idle timeout and a lifetime per connection,
// and refusals logged as one summary line per interval rather than a line each. It also
// sizes the caps of the node's listeners from the descriptor limit (RLIMIT_NOFILE), so
// that a flood on one port cannot take the descriptors that Raft, the stores and the
// control socket need.
//
// A Limiter counts slots: Acquire takes one for a remote address and its release gives
// it back. Listen wraps a net.Listener so that every accepted connection holds a slot
// until it is closed; connections over a cap are handed to Config.Refuse (an SMTP server
// answers 421 there) and closed without reaching the caller's Accept.
//
// The idle timeout and the lifetime are enforced with timers that close the connection,
// not with deadlines, so that they never interfere with the deadlines the protocol code
// sets itself (go-smtp, net/http).
//
// Package connlimit imports hclog, golang.org/x/sys/unix and the standard library only;
// it must never import another package of this project.
package connlimit
