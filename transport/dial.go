package transport

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"time"
)

// Dial opens a connection to the mux at addr ("ip:port") on channel ch, with
// mutual TLS under the node's current identity. The server's certificate must
// chain to the cluster CA (hostnames are not checked), carry the dialed IP as
// an IP SAN when addr is an IP literal, and pass Config.Authorize for ch.
// Dial returns once the server has acknowledged the channel; a refusal by the
// server fails Dial with an error wrapping ErrPeerRefused. If ctx has no
// deadline, HandshakeTimeout bounds the whole dial. A standalone node cannot
// Dial (ErrStandalone); it joins with DialPinned.
func (m *Mux) Dial(ctx context.Context, addr string, ch Channel) (net.Conn, error) {
	if !ch.valid() {
		return nil, fmt.Errorf("transport: dial %s: %w: %s", addr, ErrUnknownChannel, ch)
	}
	if m.ctx.Err() != nil {
		return nil, fmt.Errorf("transport: dial %s: %w", addr, ErrClosed)
	}
	if m.partitioned(addr) {
		return nil, fmt.Errorf("transport: dial %s: %w", addr, ErrPartitioned)
	}
	id := m.id.Load()
	if id.CAs == nil {
		return nil, fmt.Errorf("transport: dial %s: %w", addr, ErrStandalone)
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("transport: dial %q: %w", addr, err)
	}
	wantIP := net.ParseIP(host)
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // chain, IP and membership verified below
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &id.Cert, nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			fp, err := id.verifyPeer(cs.PeerCertificates, x509.ExtKeyUsageServerAuth)
			if err != nil {
				return err
			}
			if wantIP != nil && !hasIP(cs.PeerCertificates[0], wantIP) {
				return fmt.Errorf("%w: certificate %q (%s) of %s does not name IP %s",
					ErrPeerRefused, cs.PeerCertificates[0].Subject.CommonName, fp, addr, wantIP)
			}
			return m.authorize(ch, fp)
		},
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, m.cfg.HandshakeTimeout)
		defer cancel()
	}
	c, err := dialChannel(ctx, m.localIP, m.cfg.RTOMin, addr, ch, cfg)
	if err != nil {
		m.logger.Debug("dial failed", "remote-addr", addr, "channel", ch.String(), "error", err)
		m.noteRefused(addr, err)
		return nil, err
	}
	c.m, c.peer = m, addr
	return c, nil
}

// DialPinned opens a connection to the mux at addr on channel ch without a
// client certificate, for a node that is not a member yet (ChanJoin). The
// server is accepted only if its leaf certificate's fingerprint equals
// fingerprint (any accepted form, see NormalizeFingerprint); a different one
// fails with ErrFingerprintMismatch naming both. With fingerprint == "" any
// server is accepted and the caller must show the returned leaf to the
// operator and decide. timeout bounds the dial when positive.
func DialPinned(ctx context.Context, addr string, ch Channel, fingerprint string, timeout time.Duration) (net.Conn, *x509.Certificate, error) {
	return DialPinnedFrom(ctx, nil, addr, ch, fingerprint, timeout)
}

// DialPinnedFrom is DialPinned with the connection's source address bound to local
// (nil: the kernel's choice), so that a joining node reaches the cluster from the
// address it will be known at, as Mux.Dial does.
func DialPinnedFrom(ctx context.Context, local net.IP, addr string, ch Channel, fingerprint string, timeout time.Duration) (net.Conn, *x509.Certificate, error) {
	if !ch.valid() {
		return nil, nil, fmt.Errorf("transport: dial %s: %w: %s", addr, ErrUnknownChannel, ch)
	}
	want := ""
	if fingerprint != "" {
		var err error
		if want, err = NormalizeFingerprint(fingerprint); err != nil {
			return nil, nil, err
		}
	}
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // trust is the pinned fingerprint
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return fmt.Errorf("%w: %s presented no certificate", ErrPeerRefused, addr)
			}
			got := Fingerprint(cs.PeerCertificates[0].Raw)
			if want != "" && got != want {
				return fmt.Errorf("%w: %s presented %s, expected %s", ErrFingerprintMismatch, addr, got, want)
			}
			return nil
		},
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	c, err := dialChannel(ctx, local, DefaultRTOMin, addr, ch, cfg)
	if err != nil {
		return nil, nil, err
	}
	return c, c.tls.ConnectionState().PeerCertificates[0], nil
}

// dialChannel dials TCP from local (nil: any source) with the minimum
// retransmission timeout rtoMin, completes the TLS handshake, sends the channel
// byte and waits for its acknowledgement, all bounded by ctx.
func dialChannel(ctx context.Context, local net.IP, rtoMin time.Duration, addr string, ch Channel, cfg *tls.Config) (*Conn, error) {
	d := net.Dialer{LocalAddr: localAddr(local, addr)}
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("transport: dial %s (%s): %w", addr, ch, err)
	}
	tuneConn(raw, rtoMin)
	if dl, ok := ctx.Deadline(); ok {
		_ = raw.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = raw.SetDeadline(time.Unix(1, 0)) })
	fail := func(err error) (*Conn, error) {
		stop()
		_ = raw.Close()
		return nil, err
	}
	tc := tls.Client(raw, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return fail(fmt.Errorf("transport: dial %s (%s): TLS handshake: %w", addr, ch, err))
	}
	b := [1]byte{byte(ch)}
	if _, err := tc.Write(b[:]); err != nil {
		return fail(refusedOr(ctx, addr, ch, err))
	}
	if _, err := tc.Read(b[:]); err != nil {
		return fail(refusedOr(ctx, addr, ch, err))
	}
	if b[0] == refusalMarker {
		r, err := readRefusal(tc)
		if err != nil {
			return fail(refusedOr(ctx, addr, ch, err))
		}
		return fail(fmt.Errorf("transport: dial %s (%s): %w", addr, ch, r))
	}
	if Channel(b[0]) != ch {
		return fail(fmt.Errorf("transport: dial %s (%s): bad acknowledgement %s", addr, ch, Channel(b[0])))
	}
	if !stop() {
		_ = raw.Close()
		return nil, fmt.Errorf("transport: dial %s (%s): %w", addr, ch, context.Cause(ctx))
	}
	_ = raw.SetDeadline(time.Time{})
	var fp string
	if pc := tc.ConnectionState().PeerCertificates; len(pc) > 0 {
		fp = Fingerprint(pc[0].Raw)
	}
	return &Conn{Conn: tc, tls: tc, channel: ch, fingerprint: fp}, nil
}

// localAddr is the source address for a dial of addr from the node's own IP: nil
// (the kernel picks) when local is unset or unspecified, or of another family than
// addr's IP. Without it a node on 127.0.0.2 reaches 127.0.0.3 from 127.0.0.1, and a
// node with several addresses from whichever the route picks: peers would see (and a
// firewall rule would match) another address than the node's.
func localAddr(local net.IP, addr string) net.Addr {
	if local == nil || local.IsUnspecified() {
		return nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil
	}
	remote := net.ParseIP(host)
	if remote == nil || (remote.To4() == nil) != (local.To4() == nil) {
		return nil
	}
	return &net.TCPAddr{IP: local}
}

// refusedOr classifies an error after the handshake: a timeout or
// cancellation is reported as such, anything else (an alert, EOF) means the
// server refused us.
func refusedOr(ctx context.Context, addr string, ch Channel, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("transport: dial %s (%s): %w (%w)", addr, ch, context.Cause(ctx), err)
	}
	return fmt.Errorf("transport: dial %s (%s): %w: server closed the connection: %w", addr, ch, &Refusal{}, err)
}

func hasIP(c *x509.Certificate, ip net.IP) bool {
	for _, a := range c.IPAddresses {
		if a.Equal(ip) {
			return true
		}
	}
	return false
}

// HTTPClient returns an http.Client whose connections are made by Dial on
// channel ch, for node-to-node HTTP over the mux. URLs use scheme "http"
// (TLS is below HTTP) and the peer's "ip:port" as host, port included. The
// client follows the node's current identity for new connections; call
// CloseIdleConnections after SetIdentity to drop pooled ones. Bound each
// request with its context; response headers must arrive within 30s.
func (m *Mux) HTTPClient(ch Channel) *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy: nil, // never send cluster traffic through an environment proxy
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			return m.Dial(ctx, addr, ch)
		},
		// Forwarded writes and reads run many at once; a connection that is not kept
		// idle costs a full mutual-TLS handshake for the next request.
		MaxIdleConns:          512,
		MaxIdleConnsPerHost:   128,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		ExpectContinueTimeout: time.Second,
	}}
}

// PinnedHTTPClient returns an http.Client whose connections are made by
// DialPinned on channel ch against fingerprint, which must not be empty, each
// dial bounded by dialTimeout. It is the joining node's client for ChanJoin.
func PinnedHTTPClient(ch Channel, fingerprint string, dialTimeout time.Duration) (*http.Client, error) {
	return PinnedHTTPClientFrom(nil, ch, fingerprint, dialTimeout)
}

// PinnedHTTPClientFrom is PinnedHTTPClient with each connection's source address
// bound to local (see DialPinnedFrom).
func PinnedHTTPClientFrom(local net.IP, ch Channel, fingerprint string, dialTimeout time.Duration) (*http.Client, error) {
	fp, err := NormalizeFingerprint(fingerprint)
	if err != nil {
		return nil, err
	}
	if !ch.valid() {
		return nil, fmt.Errorf("%w: %s", ErrUnknownChannel, ch)
	}
	return &http.Client{Transport: &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			c, _, err := DialPinnedFrom(ctx, local, addr, ch, fp, dialTimeout)
			return c, err
		},
		MaxIdleConnsPerHost:   2,
		IdleConnTimeout:       30 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
	}}, nil
}
