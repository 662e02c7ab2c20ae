package transport

import (
	"context"
	"testing"
	"time"
)

// TestDialClosedChannelFails: a connection to a channel whose listener is closed (the
// daemon stopped serving it, as its Close does before Raft hands over) fails at Dial. An
// acknowledged connection that is then dropped made the dialer send its request, see
// the connection end, and report the outcome of a forwarded write as unknown, although
// nothing had reached a handler.
func TestDialClosedChannelFails(t *testing.T) {
	noLeaks(t)
	ca := newTestCA(t)
	a, b := openMux(t, nodeIdentity(t, ca, "a", loopback)), openMux(t, nodeIdentity(t, ca, "b", loopback))
	if err := a.Listener(ChanRPC).Close(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := b.Dial(ctx, a.Addr().String(), ChanRPC)
	if err == nil {
		c.Close()
		t.Fatal("Dial to a closed channel listener succeeded: the connection is acknowledged, then dropped")
	}
	t.Logf("refused: %v", err)
	// The other channels keep working.
	accepted := acceptAsync(a.Listener(ChanMail))
	c, err = b.Dial(ctx, a.Addr().String(), ChanMail)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if r := <-accepted; r.err != nil {
		t.Fatal(r.err)
	} else {
		r.c.Close()
	}
}
