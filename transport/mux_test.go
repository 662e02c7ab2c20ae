package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestMuxRoutesEachChannel(t *testing.T) {
	noLeaks(t)
	ca := newTestCA(t)
	idA, idB := nodeIdentity(t, ca, "a", loopback), nodeIdentity(t, ca, "b", loopback)
	a, b := openMux(t, idA), openMux(t, idB)
	for _, ch := range []Channel{ChanRaft, ChanRPC, ChanJoin, ChanMail} {
		t.Run(ch.String(), func(t *testing.T) {
			accepted := acceptAsync(a.Listener(ch))
			c, err := b.Dial(context.Background(), a.Addr().String(), ch)
			if err != nil {
				t.Fatalf("Dial: %v", err)
			}
			defer c.Close()
			var r acceptResult
			select {
			case r = <-accepted:
			case <-time.After(5 * time.Second):
				t.Fatal("nothing accepted")
			}
			if r.err != nil {
				t.Fatal(r.err)
			}
			defer r.c.Close()
			if got := r.c.(*Conn).Channel(); got != ch {
				t.Errorf("routed to %s, want %s", got, ch)
			}
			if got := PeerFingerprint(r.c); got != idB.Fingerprint {
				t.Errorf("server sees peer %s, want %s", got, idB.Fingerprint)
			}
			if got := PeerFingerprint(c); got != idA.Fingerprint {
				t.Errorf("client sees peer %s, want %s", got, idA.Fingerprint)
			}
			echo(t, c, r.c)
		})
	}
}

// echo checks that bytes flow both ways between two ends.
func echo(t *testing.T, x, y net.Conn) {
	t.Helper()
	for _, p := range [][2]net.Conn{{x, y}, {y, x}} {
		msg := []byte("hello " + p[0].LocalAddr().String())
		if _, err := p[0].Write(msg); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg))
		_ = p[1].SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(p[1], got); err != nil {
			t.Fatal(err)
		}
		if string(got) != string(msg) {
			t.Fatalf("read %q, want %q", got, msg)
		}
	}
}

// recordingAuthorizer refuses the fingerprints in deny and records calls.
type recordingAuthorizer struct {
	mu    sync.Mutex
	deny  map[string]bool
	calls []string
}

func (r *recordingAuthorizer) authorize(ch Channel, fp string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, ch.String())
	if r.deny[fp] {
		return fmt.Errorf("%w: %s is not a member", ErrPeerRefused, fp)
	}
	return nil
}

func (r *recordingAuthorizer) called() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.calls...)
}

func TestHandshakeRefusals(t *testing.T) {
	noLeaks(t)
	ca, foreign := newTestCA(t), newTestCA(t)
	member := nodeIdentity(t, ca, "member", loopback)
	deleted := nodeIdentity(t, ca, "deleted", loopback)
	outsider := nodeIdentity(t, foreign, "outsider", loopback)
	self := standaloneIdentity(t, "self")

	authz := &recordingAuthorizer{deny: map[string]bool{deleted.Fingerprint: true}}
	server := openMux(t, nodeIdentity(t, ca, "server", loopback), withAuthorizer(authz.authorize))
	standalone := openMux(t, standaloneIdentity(t, "standalone"))

	tests := []struct {
		name   string
		server *Mux
		client *Identity
		ch     Channel
		ok     bool
		// atHandshake: refused by a TLS alert during the handshake, not by
		// closing the connection after the channel byte.
		atHandshake bool
	}{
		{"member", server, member, ChanRPC, true, false},
		{"certificate of another CA", server, outsider, ChanRPC, false, true},
		{"self-signed certificate", server, self, ChanRaft, false, true},
		{"deleted member refused by authorizer", server, deleted, ChanRaft, false, true},
		{"deleted member refused on join too", server, deleted, ChanJoin, false, true},
		{"standalone refuses CA certificate", standalone, member, ChanJoin, false, true},
		{"standalone refuses self-signed certificate", standalone, self, ChanJoin, false, true},
		{"unknown channel byte", server, member, Channel('X'), false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			accepted := acceptAsync(tt.server.Listener(ChanJoin))
			err := rawDial(tt.server.Addr().String(), &tt.client.Cert, byte(tt.ch))
			if (err == nil) != tt.ok {
				t.Fatalf("rawDial error = %v, want success %v", err, tt.ok)
			}
			if tt.ok {
				return
			}
			// crypto/tls does not export the type of a received alert.
			if alert := strings.Contains(err.Error(), "bad certificate"); alert != tt.atHandshake {
				t.Errorf("error %q: refused at handshake = %v, want %v", err, alert, tt.atHandshake)
			}
			select {
			case r := <-accepted:
				if r.err == nil {
					r.c.Close()
				}
				t.Fatal("refused connection was handed to a listener")
			case <-time.After(50 * time.Millisecond):
			}
		})
	}

	// The authorizer saw ChanAny at the handshake, then the channel.
	calls := strings.Join(authz.called(), ",")
	if !strings.HasPrefix(calls, "any,rpc,") {
		t.Errorf("authorizer calls = %s, want any,rpc first", calls)
	}

	// A refused member using the mux's own Dial gets ErrPeerRefused from Dial.
	d := openMux(t, deleted)
	_, err := d.Dial(context.Background(), server.Addr().String(), ChanRPC)
	if !errors.Is(err, ErrPeerRefused) {
		t.Fatalf("Dial by deleted member: error = %v, want ErrPeerRefused", err)
	}
}

func TestDialVerifiesServer(t *testing.T) {
	noLeaks(t)
	ca, foreign := newTestCA(t), newTestCA(t)
	client := nodeIdentity(t, ca, "client", loopback)
	fenced := nodeIdentity(t, ca, "fenced", loopback)
	authz := &recordingAuthorizer{deny: map[string]bool{fenced.Fingerprint: true}}
	c := openMux(t, client, withAuthorizer(authz.authorize))

	tests := []struct {
		name    string
		server  *Identity
		wantErr error
	}{
		{"member", nodeIdentity(t, ca, "good", loopback), nil},
		{"server of another CA", nodeIdentity(t, foreign, "evil", loopback), ErrPeerRefused},
		{"server cert names another IP", nodeIdentity(t, ca, "moved", net.IPv4(127, 0, 0, 2)), ErrPeerRefused},
		{"server refused by authorizer", fenced, ErrPeerRefused},
		{"standalone server", standaloneIdentity(t, "standalone"), ErrPeerRefused},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openMux(t, tt.server)
			conn, err := c.Dial(context.Background(), s.Addr().String(), ChanRPC)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("Dial: %v", err)
				}
				conn.Close()
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Dial error = %v, want %v", err, tt.wantErr)
			}
		})
	}

	standalone := openMux(t, standaloneIdentity(t, "s"))
	if _, err := standalone.Dial(context.Background(), c.Addr().String(), ChanRPC); !errors.Is(err, ErrStandalone) {
		t.Errorf("Dial from standalone node: error = %v, want ErrStandalone", err)
	}
	if _, err := c.Dial(context.Background(), c.Addr().String(), Channel('X')); !errors.Is(err, ErrUnknownChannel) {
		t.Errorf("Dial on unknown channel: error = %v, want ErrUnknownChannel", err)
	}
}

func TestCertlessClient(t *testing.T) {
	noLeaks(t)
	ca := newTestCA(t)
	member := openMux(t, nodeIdentity(t, ca, "member", loopback))
	standalone := openMux(t, standaloneIdentity(t, "standalone"))
	for _, srv := range []struct {
		name string
		m    *Mux
	}{{"member", member}, {"standalone", standalone}} {
		for _, tt := range []struct {
			ch Channel
			ok bool
		}{{ChanJoin, true}, {ChanRPC, false}, {ChanRaft, false}, {ChanMail, false}} {
			t.Run(srv.name+"/"+tt.ch.String(), func(t *testing.T) {
				fp := srv.m.Identity().Fingerprint
				conn, _, err := DialPinned(context.Background(), srv.m.Addr().String(), tt.ch, fp, 5*time.Second)
				if !tt.ok {
					if !errors.Is(err, ErrPeerRefused) {
						t.Fatalf("DialPinned error = %v, want ErrPeerRefused", err)
					}
					return
				}
				if err != nil {
					t.Fatalf("DialPinned: %v", err)
				}
				defer conn.Close()
				s := acceptOne(t, srv.m.Listener(tt.ch))
				if fp := PeerFingerprint(s); fp != "" {
					t.Errorf("PeerFingerprint of certificate-less client = %q, want empty", fp)
				}
				echo(t, conn, s)
			})
		}
	}
}

func TestDialPinned(t *testing.T) {
	noLeaks(t)
	id := standaloneIdentity(t, "master")
	m := openMux(t, id)
	other := Fingerprint([]byte("another certificate"))
	tests := []struct {
		name    string
		fp      string
		wantErr error
	}{
		{"exact", id.Fingerprint, nil},
		{"lower case bare", strings.ToLower(strings.ReplaceAll(id.Fingerprint, ":", "")), nil},
		{"empty accepts any", "", nil},
		{"wrong", other, ErrFingerprintMismatch},
		{"malformed", "AB:CD", ErrBadFingerprint},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn, leaf, err := DialPinned(context.Background(), m.Addr().String(), ChanJoin, tt.fp, 5*time.Second)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("DialPinned error = %v, want %v", err, tt.wantErr)
				}
				if tt.wantErr == ErrFingerprintMismatch &&
					(!strings.Contains(err.Error(), other) || !strings.Contains(err.Error(), id.Fingerprint)) {
					t.Errorf("mismatch error %q does not name both fingerprints", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("DialPinned: %v", err)
			}
			defer conn.Close()
			acceptOne(t, m.Listener(ChanJoin))
			if got := Fingerprint(leaf.Raw); got != id.Fingerprint {
				t.Errorf("leaf fingerprint %s, want %s", got, id.Fingerprint)
			}
		})
	}
}

func TestSetIdentityRotation(t *testing.T) {
	noLeaks(t)
	ca := newTestCA(t)
	oldA, newA := nodeIdentity(t, ca, "a", loopback), nodeIdentity(t, ca, "a", loopback)
	oldB, newB := nodeIdentity(t, ca, "b", loopback), nodeIdentity(t, ca, "b", loopback)
	a, b := openMux(t, oldA), openMux(t, oldB)
	addr := a.Addr().String()

	// Server side: after rotation the new certificate is presented.
	_, leaf, err := DialPinned(context.Background(), addr, ChanJoin, "", 5*time.Second)
	if err != nil || Fingerprint(leaf.Raw) != oldA.Fingerprint {
		t.Fatalf("before rotation: leaf %v, err %v", leaf, err)
	}
	acceptOne(t, a.Listener(ChanJoin)).Close()
	a.SetIdentity(newA)
	if a.Identity() != newA {
		t.Fatal("Identity() does not return the new identity")
	}
	conn, leaf, err := DialPinned(context.Background(), addr, ChanJoin, "", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	acceptOne(t, a.Listener(ChanJoin)).Close()
	if got := Fingerprint(leaf.Raw); got != newA.Fingerprint {
		t.Fatalf("after rotation server presents %s, want %s", got, newA.Fingerprint)
	}
	if _, _, err := DialPinned(context.Background(), addr, ChanJoin, oldA.Fingerprint, 5*time.Second); !errors.Is(err, ErrFingerprintMismatch) {
		t.Fatalf("old fingerprint still accepted: %v", err)
	}

	// Client side: after rotation the new certificate is presented.
	b.SetIdentity(newB)
	conn, err = b.Dial(context.Background(), addr, ChanRPC)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if got := PeerFingerprint(acceptOne(t, a.Listener(ChanRPC))); got != newB.Fingerprint {
		t.Fatalf("after rotation client presents %s, want %s", got, newB.Fingerprint)
	}
}

func TestCreateWithoutRestart(t *testing.T) {
	noLeaks(t)
	ca := newTestCA(t)
	s := openMux(t, standaloneIdentity(t, "s"))
	peer := openMux(t, nodeIdentity(t, ca, "peer", loopback))
	if _, err := peer.Dial(context.Background(), s.Addr().String(), ChanRPC); !errors.Is(err, ErrPeerRefused) {
		t.Fatalf("standalone node accepted a member: %v", err)
	}
	s.SetIdentity(nodeIdentity(t, ca, "s", loopback)) // pmgcm create
	conn, err := peer.Dial(context.Background(), s.Addr().String(), ChanRPC)
	if err != nil {
		t.Fatalf("after SetIdentity: %v", err)
	}
	defer conn.Close()
	acceptOne(t, s.Listener(ChanRPC))
}

func TestCloseUnblocksAccept(t *testing.T) {
	noLeaks(t)
	ca := newTestCA(t)
	m := openMux(t, nodeIdentity(t, ca, "a", loopback))
	addr := m.Addr().String()
	var waiting []<-chan acceptResult
	for _, ch := range []Channel{ChanRaft, ChanRPC, ChanJoin, ChanMail} {
		waiting = append(waiting, acceptAsync(m.Listener(ch)))
	}
	if err := m.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for _, w := range waiting {
		select {
		case r := <-w:
			if !errors.Is(r.err, net.ErrClosed) || !errors.Is(r.err, ErrClosed) {
				t.Errorf("Accept after Close: error = %v, want net.ErrClosed", r.err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Accept still blocked after Close")
		}
	}
	if err := m.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := m.Open(); !errors.Is(err, ErrClosed) {
		t.Errorf("Open after Close: %v", err)
	}
	if _, err := m.Dial(context.Background(), addr, ChanRPC); !errors.Is(err, ErrClosed) {
		t.Errorf("Dial after Close: %v", err)
	}
	if _, _, err := DialPinned(context.Background(), addr, ChanJoin, "", time.Second); err == nil {
		t.Error("closed mux still accepts connections")
	}
}

func TestChannelListenerClose(t *testing.T) {
	noLeaks(t)
	ca := newTestCA(t)
	a, b := openMux(t, nodeIdentity(t, ca, "a", loopback)), openMux(t, nodeIdentity(t, ca, "b", loopback))
	if err := a.Listener(ChanRaft).Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Listener(ChanRaft).Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept on closed channel listener: %v", err)
	}
	// Other channels keep working.
	conn, err := b.Dial(context.Background(), a.Addr().String(), ChanRPC)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	acceptOne(t, a.Listener(ChanRPC))
	if _, err := a.Listener(Channel('X')).Accept(); !errors.Is(err, ErrUnknownChannel) {
		t.Fatalf("Accept on unknown channel: %v", err)
	}
}

func TestSlowClientDoesNotBlockOthers(t *testing.T) {
	noLeaks(t)
	ca := newTestCA(t)
	idA := nodeIdentity(t, ca, "a", loopback)
	a := openMux(t, idA, withHandshakeTimeout(500*time.Millisecond))
	b := openMux(t, nodeIdentity(t, ca, "b", loopback))
	addr := a.Addr().String()

	// One client opens TCP and sends nothing; another completes TLS but never
	// sends the channel byte.
	silent, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	noByte, err := tlsDialNoChannel(addr, &idA.Cert)
	if err != nil {
		t.Fatal(err)
	}
	defer noByte.Close()

	start := time.Now()
	conn, err := b.Dial(context.Background(), addr, ChanRPC)
	if err != nil {
		t.Fatalf("Dial beside slow clients: %v", err)
	}
	defer conn.Close()
	acceptOne(t, a.Listener(ChanRPC))
	if d := time.Since(start); d > 400*time.Millisecond {
		t.Errorf("dial took %v; slow clients blocked it", d)
	}

	// Both slow clients are dropped after the handshake timeout.
	for _, c := range []net.Conn{silent, noByte} {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := c.Read(make([]byte, 1))
		var ne net.Error
		if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
			t.Errorf("slow client not dropped: %v", err)
		}
	}
}

// tlsDialNoChannel completes a TLS handshake presenting cert and sends nothing.
func tlsDialNoChannel(addr string, cert *tls.Certificate) (net.Conn, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true, Certificates: []tls.Certificate{*cert}}
	return tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
}

func TestOpenErrors(t *testing.T) {
	noLeaks(t)
	id := standaloneIdentity(t, "a")
	a := openMux(t, id)
	busy := a.Addr().String()
	m, err := New(DefaultConfig(busy), id)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Open(); err == nil || !strings.Contains(err.Error(), busy) {
		t.Fatalf("Open on busy address: error = %v, want it to name %s", err, busy)
	}
	if err := a.Open(); err == nil {
		t.Fatal("second Open succeeded")
	}
	for _, bad := range []Config{{BindAddr: "no-port"}, {BindAddr: "127.0.0.1:0", HandshakeTimeout: -1}} {
		if _, err := New(bad, id); err == nil {
			t.Errorf("New(%+v) succeeded", bad)
		}
	}
	if _, err := New(DefaultConfig("127.0.0.1:0"), nil); err == nil {
		t.Error("New with nil identity succeeded")
	}
}

// TestPartition: a partitioned peer's dials fail, its open connections fail on the next
// I/O, and healing lets new connections through again.
func TestPartition(t *testing.T) {
	noLeaks(t)
	ca := newTestCA(t)
	a := openMux(t, nodeIdentity(t, ca, "a", loopback))
	b := openMux(t, nodeIdentity(t, ca, "b", loopback))
	ctx := context.Background()

	conn, err := a.Dial(ctx, b.Addr().String(), ChanRPC)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	got := acceptOne(t, b.Listener(ChanRPC))
	defer got.Close()

	a.Partition([]string{"127.0.0.1"})
	if _, err := conn.Write([]byte("x")); !errors.Is(err, ErrPartitioned) {
		t.Fatalf("write on a partitioned connection = %v, want ErrPartitioned", err)
	}
	if _, err := a.Dial(ctx, b.Addr().String(), ChanRPC); !errors.Is(err, ErrPartitioned) {
		t.Fatalf("dial across the partition = %v, want ErrPartitioned", err)
	}
	a.Partition(nil)
	c2, err := a.Dial(ctx, b.Addr().String(), ChanRPC)
	if err != nil {
		t.Fatalf("dial after healing: %v", err)
	}
	_ = c2.Close()
	_ = acceptOne(t, b.Listener(ChanRPC)).Close()
}
