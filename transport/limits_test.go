package transport

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// lockedBuffer collects log output from many goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestFloodFromOneSourceLeavesMembersIn: idle TCP connections from one address fill only
// that address's share of the pre-handshake slots; a member connects beside them, and the
// refusals make a line or two of log, not one each.
func TestFloodFromOneSourceLeavesMembersIn(t *testing.T) {
	noLeaks(t)
	ca := newTestCA(t)
	var logs lockedBuffer
	a := openMux(t, nodeIdentity(t, ca, "a", loopback), func(c *Config) {
		c.MaxPending, c.MaxPendingPerSource = 16, 4
		c.HandshakeTimeout = 3 * time.Second
		c.Logger = hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Info})
	})
	b := openMux(t, nodeIdentity(t, ca, "b", loopback))
	addr := a.Addr().String()

	const flood = 60
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, Timeout: 5 * time.Second}
	var held []net.Conn
	defer func() {
		for _, c := range held {
			_ = c.Close()
		}
	}()
	for i := 0; i < flood; i++ {
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("flood connection %d: %v", i, err)
		}
		held = append(held, c)
	}
	// The mux takes them in order: once one past the per-source cap is closed, the
	// member's connections come after the whole flood.
	closedOne := func() bool {
		_ = held[flood-1].SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		_, err := held[flood-1].Read(make([]byte, 1))
		var ne net.Error
		return err != nil && !(errors.As(err, &ne) && ne.Timeout())
	}
	for deadline := time.Now().Add(5 * time.Second); !closedOne(); {
		if time.Now().After(deadline) {
			t.Fatal("the connections past the per-source cap were not closed")
		}
	}
	for i := 0; i < 10; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		c, err := b.Dial(ctx, addr, ChanRPC)
		cancel()
		if err != nil {
			t.Fatalf("member dial %d beside the flood: %v", i, err)
		}
		acceptOne(t, a.Listener(ChanRPC))
		_ = c.Close()
	}
	a.pending.Close() // write the pending summary now
	out := logs.String()
	if n := strings.Count(out, "connections refused over the cap") + strings.Count(out, "refusing connections over the cap"); n < 1 || n > 3 {
		t.Fatalf("%d refusal lines for %d refusals, want 1 to 3:\n%s", n, flood-4, out)
	}
	if !strings.Contains(out, "source=127.0.0.2") {
		t.Fatalf("the refusal lines do not name the source:\n%s", out)
	}
}
