package transport

import (
	"context"
	"net"
	"testing"
	"time"
)

func withBindAddr(addr string) muxOpt { return func(c *Config) { c.BindAddr = addr } }

// remoteIP is the source IP of a connection as the accepting side sees it.
func remoteIP(t *testing.T, c net.Conn) net.IP {
	t.Helper()
	ta, ok := c.RemoteAddr().(*net.TCPAddr)
	if !ok {
		t.Fatalf("remote address %v is not TCP", c.RemoteAddr())
	}
	return ta.IP
}

// A node dials its peers from its own address, not from whichever the kernel picks
// (127.0.0.1 on loopback): peers and per-address firewall rules see who it is.
func TestDialFromOwnAddress(t *testing.T) {
	noLeaks(t)
	ca := newTestCA(t)
	ipA, ipB := net.ParseIP("127.0.3.1"), net.ParseIP("127.0.3.2")
	a := openMux(t, nodeIdentity(t, ca, "a", ipA), withBindAddr("127.0.3.1:0"))
	b := openMux(t, nodeIdentity(t, ca, "b", ipB), withBindAddr("127.0.3.2:0"))

	conn, err := a.Dial(context.Background(), b.Addr().String(), ChanRPC)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	defer conn.Close()
	if got := remoteIP(t, acceptOne(t, b.Listener(ChanRPC))); !got.Equal(ipA) {
		t.Errorf("Dial: b sees the connection from %s, want a's address %s", got, ipA)
	}

	pc, _, err := DialPinnedFrom(context.Background(), ipA, b.Addr().String(), ChanJoin, "", 5*time.Second)
	if err != nil {
		t.Fatalf("DialPinnedFrom: %v", err)
	}
	defer pc.Close()
	if got := remoteIP(t, acceptOne(t, b.Listener(ChanJoin))); !got.Equal(ipA) {
		t.Errorf("DialPinnedFrom: b sees the connection from %s, want %s", got, ipA)
	}
}

func TestLocalAddr(t *testing.T) {
	v4, v6 := net.ParseIP("127.0.3.1"), net.ParseIP("::1")
	tests := []struct {
		local net.IP
		addr  string
		want  string
	}{
		{nil, "127.0.3.2:1", ""},
		{net.IPv4zero, "127.0.3.2:1", ""},
		{v4, "127.0.3.2:1", "127.0.3.1:0"},
		{v4, "[::1]:1", ""},
		{v6, "[::1]:1", "[::1]:0"},
		{v4, "not an address", ""},
	}
	for _, tt := range tests {
		got := ""
		if a := localAddr(tt.local, tt.addr); a != nil {
			got = a.String()
		}
		if got != tt.want {
			t.Errorf("localAddr(%v, %q) = %q, want %q", tt.local, tt.addr, got, tt.want)
		}
	}
}
