package transport

import (
	"context"
	"net"
	"runtime"
	"testing"
)

// rawTCP is the TCP connection under a mux connection.
func rawTCP(t *testing.T, c net.Conn) *net.TCPConn {
	t.Helper()
	mc, ok := c.(*Conn)
	if !ok {
		t.Fatalf("%T is not a mux connection", c)
	}
	tc, ok := mc.tls.NetConn().(*net.TCPConn)
	if !ok {
		t.Fatalf("%T is not TCP", mc.tls.NetConn())
	}
	return tc
}

// Both ends of a cluster connection retransmit after DefaultRTOMin, not the kernel's
// 200 ms: a lost heartbeat must not outlast the leader lease.
func TestConnectionsUseShortRTO(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("per-connection RTO is Linux only")
	}
	noLeaks(t)
	ca := newTestCA(t)
	a := openMux(t, nodeIdentity(t, ca, "a", loopback))
	b := openMux(t, nodeIdentity(t, ca, "b", loopback))
	conn, err := a.Dial(context.Background(), b.Addr().String(), ChanRPC)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	defer conn.Close()
	accepted := acceptOne(t, b.Listener(ChanRPC))
	for name, c := range map[string]net.Conn{"dialed": conn, "accepted": accepted} {
		got, err := rtoMin(rawTCP(t, c))
		if err != nil {
			t.Skipf("kernel without TCP_RTO_MIN_US (Linux 6.15+): %v", err)
		}
		// The kernel rounds to its clock tick.
		if got < DefaultRTOMin || got > DefaultRTOMin+10*1e6 {
			t.Errorf("%s connection: RTO min %v, want %v", name, got, DefaultRTOMin)
		}
	}
}
