package cluster

import (
	"context"
	"net"
	"time"

	"github.com/pmgcm/pmgcm/transport"
)

// DialJoin reaches the node at addr on the join channel, for a node that is no member
// yet: it trusts the server whose certificate has fingerprint, or with fingerprint ""
// whatever it presents (the caller then shows the fingerprint to the operator). It
// returns a Client pinned to the server's certificate and that certificate's
// fingerprint; close the Client's idle connections when done. local, if set, is the
// source address (the node's own, so that peers and per-address firewall rules see it);
// timeout bounds each dial.
// A failure to reach it is the transport's error (transport.ErrFingerprintMismatch for
// another certificate).
func DialJoin(ctx context.Context, local net.IP, addr, fingerprint string, timeout time.Duration) (*Client, string, error) {
	conn, leaf, err := transport.DialPinnedFrom(ctx, local, addr, transport.ChanJoin, fingerprint, timeout)
	if err != nil {
		return nil, "", err
	}
	_ = conn.Close()
	fp := transport.Fingerprint(leaf.Raw)
	hc, err := transport.PinnedHTTPClientFrom(local, transport.ChanJoin, fp, timeout)
	if err != nil {
		return nil, "", err
	}
	return NewClient(hc), fp, nil
}
