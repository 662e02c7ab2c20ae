package smtpd

import (
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/internal/testutil"
)

// drainAsync starts Drain with the bound and returns where its result arrives.
func drainAsync(ts *testServer, bound time.Duration) <-chan error {
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), bound)
		defer cancel()
		done <- ts.Drain(ctx)
	}()
	return done
}

// waitRefused waits until the server no longer accepts connections.
func waitRefused(t *testing.T, addr string) {
	t.Helper()
	testutil.Poll(t, "the listener to close", 10*time.Second, testutil.Cond(func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err != nil
	}))
}

// TestDrainCompletesTransactionInData: a transfer in the middle of DATA when Drain
// begins finishes and gets its 250, and the message is stored; meanwhile new connections
// are refused, a command outside a transaction gets 421 (also on the connection whose
// transaction just ended), and an idle connection gets 421 when the drain ends.
func TestDrainCompletesTransactionInData(t *testing.T) {
	ts := startServer(t, nil)
	idle := dialRaw(t, ts.addr)
	idle.expect("EHLO idle", 250)
	quiet := dialRaw(t, ts.addr) // sends nothing more; told 421 at the end
	quiet.expect("EHLO quiet", 250)
	rc := startData(t, ts.addr)
	<-ts.store.started

	done := drainAsync(ts, 10*time.Second)
	waitRefused(t, ts.addr)
	// An idle session's next command is refused, and its connection closed.
	if code, msg := idle.cmd("NOOP"); code != 421 || !strings.Contains(msg, "4.3.2") {
		t.Errorf("NOOP while draining: %d %s, want 421 4.3.2", code, msg)
	}
	if got := readAll(idle); got != "" {
		t.Errorf("after the 421 the server sent %q; want the connection closed", got)
	}
	select {
	case err := <-done:
		t.Fatalf("Drain returned (%v) while a transaction was in flight", err)
	default:
	}
	// The transfer in flight completes: 250, stored.
	if _, err := rc.conn.Write([]byte("the second half\r\n.\r\n")); err != nil {
		t.Fatal(err)
	}
	if code, msg := rc.reply(); code != 250 {
		t.Fatalf("end of DATA while draining: %d %s, want 250", code, msg)
	}
	// A new transaction on the same connection is refused.
	if code, msg := rc.cmd("MAIL FROM:<a@example.net>"); code != 421 || !strings.Contains(msg, "4.3.2") {
		t.Errorf("MAIL after the drain began: %d %s, want 421 4.3.2", code, msg)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Drain: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Drain did not return once the transaction ended")
	}
	if got := readAll(quiet); !strings.HasPrefix(got, "421 4.3.2") {
		t.Errorf("idle connection at the end of the drain got %q, want a 421", got)
	}
	msgs := ts.store.all()
	if len(msgs) != 1 || !strings.Contains(string(msgs[0].data), "the second half") {
		t.Fatalf("stored %d messages (%+v), want the one completed during the drain", len(msgs), msgs)
	}
	ts.wantOutcomes(t, map[Outcome]int{Accepted: 1})
	if err := ts.Close(); err != nil {
		t.Errorf("Close after Drain: %v", err)
	}
}

// TestDrainBound: a transfer that does not finish within the bound is cut without a
// reply, nothing of it is stored, and Drain returns soon after the bound.
func TestDrainBound(t *testing.T) {
	ts := startServer(t, nil)
	rc := startData(t, ts.addr)
	<-ts.store.started
	start := time.Now()
	done := drainAsync(ts, 300*time.Millisecond)
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Drain: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Drain did not return after its bound")
	}
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Errorf("Drain returned after %v, before its bound", took)
	}
	if got := readAll(rc); strings.Contains(got, "250") {
		t.Errorf("cut transfer got %q", got)
	}
	if ts.store.count() != 0 || ts.store.abortedCount() != 1 {
		t.Errorf("after the bound: %d stored, %d aborted; want 0 and 1", ts.store.count(), ts.store.abortedCount())
	}
	ts.wantOutcomes(t, map[Outcome]int{FailedShutdown: 1})
}

// TestDrainWaitsForStore: a message whose store is still syncing when Drain begins gets
// its 250 once the store returns, and Drain waits for it.
func TestDrainWaitsForStore(t *testing.T) {
	ts := startServer(t, nil)
	ts.store.block = make(chan struct{})
	rc := startData(t, ts.addr)
	if _, err := rc.conn.Write([]byte(".\r\n")); err != nil {
		t.Fatal(err)
	}
	<-ts.store.read
	done := drainAsync(ts, 10*time.Second)
	waitRefused(t, ts.addr)
	select {
	case err := <-done:
		t.Fatalf("Drain returned (%v) while the store was busy", err)
	default:
	}
	close(ts.store.block)
	if code, msg := rc.reply(); code != 250 {
		t.Fatalf("reply after the store returned: %d %s, want 250", code, msg)
	}
	rc.expect("QUIT", 421) // any command after the transaction
	if err := <-done; err != nil {
		t.Errorf("Drain: %v", err)
	}
	if ts.store.count() != 1 {
		t.Errorf("stored %d, want 1", ts.store.count())
	}
}

// TestDrainIdle: with no transaction in flight Drain returns at once, and Open after it
// is refused.
func TestDrainIdle(t *testing.T) {
	ts := startServer(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if err := ts.Drain(ctx); err != nil {
		t.Fatalf("Drain: %v", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("idle Drain took %v", took)
	}
	if _, err := net.DialTimeout("tcp", ts.addr, time.Second); err == nil {
		t.Error("still accepting connections after Drain")
	}
	if err := ts.Drain(ctx); err != nil {
		t.Errorf("second Drain: %v", err)
	}
	if err := ts.Open(); err == nil {
		t.Error("Open after Drain succeeded")
	}
}

// wrappedConn hides the TCP connection's own methods, as a connection limiter's does,
// and hands it out with NetConn.
type wrappedConn struct{ net.Conn }

func (w wrappedConn) NetConn() net.Conn { return w.Conn }

// TestCloseWriteThroughWrapper: the end of the stream after a drain's 421 reaches the
// client also through a wrapping connection.
func TestCloseWriteThroughWrapper(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	tc := &trackedConn{Conn: wrappedConn{server}, closed: make(chan struct{})}
	tc.sayBye()
	tc.closeWrite()
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(client)
	if err != nil || string(got) != byeReply {
		t.Fatalf("client read %q, %v; want the 421 and the end of the stream", got, err)
	}
}
