package transport

import (
	"io"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func TestRaftLayerAppendEntries(t *testing.T) {
	noLeaks(t)
	ca := newTestCA(t)
	a := openMux(t, nodeIdentity(t, ca, "a", loopback))
	b := openMux(t, nodeIdentity(t, ca, "b", loopback))

	ta := raft.NewNetworkTransport(a.RaftLayer(), 3, time.Second, io.Discard)
	tb := raft.NewNetworkTransport(b.RaftLayer(), 3, time.Second, io.Discard)
	if got, want := string(tb.LocalAddr()), b.Addr().String(); got != want {
		t.Fatalf("raft advertises %s, want %s", got, want)
	}

	// b answers every AppendEntries with success at the request's term.
	stop := make(chan struct{})
	served := make(chan struct{})
	go func() {
		defer close(served)
		for {
			select {
			case rpc := <-tb.Consumer():
				req := rpc.Command.(*raft.AppendEntriesRequest)
				rpc.Respond(&raft.AppendEntriesResponse{Term: req.Term, LastLog: req.PrevLogEntry + uint64(len(req.Entries)), Success: true}, nil)
			case <-stop:
				return
			}
		}
	}()
	t.Cleanup(func() {
		ta.CloseStreams()
		tb.CloseStreams()
		_ = ta.Close()
		_ = tb.Close()
		close(stop)
		<-served
	})

	req := raft.AppendEntriesRequest{
		RPCHeader:    raft.RPCHeader{ID: []byte("a"), Addr: []byte(ta.LocalAddr())},
		Term:         7,
		PrevLogEntry: 10,
		PrevLogTerm:  6,
		Entries:      []*raft.Log{{Index: 11, Term: 7, Type: raft.LogCommand, Data: []byte("set x=1")}},
	}
	for i := range 3 { // later RPCs reuse the pooled connection
		var resp raft.AppendEntriesResponse
		if err := ta.AppendEntries("b", tb.LocalAddr(), &req, &resp); err != nil {
			t.Fatalf("AppendEntries #%d: %v", i, err)
		}
		if !resp.Success || resp.Term != 7 || resp.LastLog != 11 {
			t.Fatalf("AppendEntries #%d: response %+v", i, resp)
		}
	}
}

// TestRaftLayerReopen: closing one Raft view unblocks its Accept and leaves ChanRaft
// open, so a second Raft instance over the same mux receives the next connection.
func TestRaftLayerReopen(t *testing.T) {
	noLeaks(t)
	ca := newTestCA(t)
	a := openMux(t, nodeIdentity(t, ca, "a", loopback))
	b := openMux(t, nodeIdentity(t, ca, "b", loopback))

	first := b.RaftLayer()
	res := acceptAsync(first)
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	if r := <-res; r.err == nil {
		t.Fatal("Accept on a closed Raft view returned a connection")
	}

	second := b.RaftLayer()
	conn, err := a.RaftLayer().Dial(raft.ServerAddress(b.Addr().String()), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	got := acceptOne(t, second)
	defer got.Close()
	if PeerFingerprint(got) != a.Identity().Fingerprint {
		t.Fatalf("second view accepted a connection from %q, want a's", PeerFingerprint(got))
	}
	_ = second.Close()
}
