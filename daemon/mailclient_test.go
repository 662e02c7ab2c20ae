package daemon

import (
	"testing"

	"github.com/pmgcm/pmgcm/mailrepl"
)

// TestMailServerOutlastsIdleBodyConnections: a member's mail connection stays open on the
// server for longer than the replicator's client keeps it idle (mailrepl.NewHTTPClient,
// over synchttp, which finds a connection the server closed only by the next fetch on
// it), so that the client closes it first and no fetch is sent on a closed connection.
func TestMailServerOutlastsIdleBodyConnections(t *testing.T) {
	if memberIdleTimeout <= mailrepl.ClientIdleTimeout {
		t.Fatalf("memberIdleTimeout %s is not above mailrepl.ClientIdleTimeout %s: raise it", memberIdleTimeout, mailrepl.ClientIdleTimeout)
	}
}
