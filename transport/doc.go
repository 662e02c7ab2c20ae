// Package transport owns the node's single TLS port: the cluster certificate
// authority and node certificates (certs.go), the identity a node presents and
// trusts (identity.go), and a mux that routes every connection on that one port
// to Raft, cluster RPC, join, or mail replication by a channel byte sent right
// after the TLS handshake (mux.go, dial.go).
//
// # Wire protocol
//
// A dialer opens TCP, completes a TLS 1.3 handshake, and writes one channel
// byte ('R', 'C', 'J' or 'M'). The server answers with the same byte once it
// has accepted the connection for that channel; only then is the connection
// handed to the channel's listener. The acknowledgement exists because in
// TLS 1.3 the server verifies the client's certificate after the client's
// handshake has already returned: without it a refused dialer would only learn
// of the refusal on its first read, inside Raft or HTTP code. With it, Dial
// itself fails with ErrPeerRefused.
//
// A server that refuses a member for a reason the member must learn (it is
// fenced) sends, instead of the acknowledgement, a refusal record carrying its
// cluster and epoch (see Refusal); a dialer of the first release reads it as a
// bad acknowledgement and fails the dial as before.
//
// # Peer authorization (DESIGN.md safety rule 4)
//
// A client that presents a certificate must chain to the cluster CA of the
// node's current Identity and pass the Config.Authorize hook, first at the
// handshake (with ChanAny) and again once the channel byte is known. A client
// without a certificate may open ChanJoin only. A standalone node (no CA)
// refuses every certificate-bearing client. When dialing, the server's
// certificate must chain to the CA, carry the dialed IP address as an IP SAN,
// and pass Authorize for the channel being opened.
//
// # Imports
//
// transport imports only the standard library, hashicorp/raft, go-hclog and
// internal/connlimit (a leaf package).
// It must never import another pmgcm package (fsm, raftnode, cli, ...): the
// daemon injects membership knowledge through PeerAuthorizer.
package transport

import (
	"errors"
	"fmt"
	"net"
)

// Sentinel errors of the package. Match them with errors.Is; the returned
// errors wrap them with details (addresses, fingerprints).
var (
	// ErrPeerRefused means a peer was refused: by the Authorize hook, by
	// certificate verification, or by the remote side closing the connection
	// instead of acknowledging the channel.
	ErrPeerRefused = errors.New("transport: peer refused")
	// ErrFingerprintMismatch means a pinned server presented a certificate
	// with a different fingerprint than expected.
	ErrFingerprintMismatch = errors.New("transport: certificate fingerprint mismatch")
	// ErrBadFingerprint means a fingerprint string is not 32 hex-encoded bytes.
	ErrBadFingerprint = errors.New("transport: malformed fingerprint")
	// ErrClosed is returned by Accept on a closed mux or channel listener,
	// and by operations on a closed mux. It wraps net.ErrClosed.
	ErrClosed = fmt.Errorf("transport: closed: %w", net.ErrClosed)
	// ErrUnknownChannel means a channel byte is not one of the known channels.
	ErrUnknownChannel = errors.New("transport: unknown channel")
	// ErrStandalone means an operation needs the cluster CA but the node's
	// identity has none (the node is in no cluster yet).
	ErrStandalone = errors.New("transport: node is standalone (no cluster CA)")
)
