package transport

import (
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// whoAmI serves the caller's fingerprint as seen through ConnContext, on l,
// until the test ends.
func whoAmI(t *testing.T, l net.Listener) {
	t.Helper()
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, "peer="+PeerFingerprintFromContext(r.Context()))
		}),
		ConnContext:       ConnContext,
		ReadHeaderTimeout: 5 * time.Second,
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	t.Cleanup(func() {
		_ = srv.Close()
		if err := <-done; err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
}

func get(t *testing.T, c *http.Client, url string) string {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestHTTPClientOverRPC(t *testing.T) {
	noLeaks(t)
	ca := newTestCA(t)
	a := openMux(t, nodeIdentity(t, ca, "a", loopback))
	idB := nodeIdentity(t, ca, "b", loopback)
	b := openMux(t, idB)
	whoAmI(t, a.Listener(ChanRPC))

	c := b.HTTPClient(ChanRPC)
	defer c.CloseIdleConnections()
	url := "http://" + a.Addr().String() + "/status"
	for range 2 { // the second request reuses the pooled connection
		if got, want := get(t, c, url), "peer="+idB.Fingerprint; got != want {
			t.Fatalf("body %q, want %q", got, want)
		}
	}
}

func TestPinnedHTTPClientOverJoin(t *testing.T) {
	noLeaks(t)
	ca := newTestCA(t)
	idA := nodeIdentity(t, ca, "a", loopback)
	a := openMux(t, idA)
	whoAmI(t, a.Listener(ChanJoin))
	url := "http://" + a.Addr().String() + "/join"

	c, err := PinnedHTTPClient(ChanJoin, idA.Fingerprint, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseIdleConnections()
	if got := get(t, c, url); got != "peer=" {
		t.Fatalf("body %q, want a certificate-less peer", got)
	}

	wrong, err := PinnedHTTPClient(ChanJoin, Fingerprint([]byte("other")), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer wrong.CloseIdleConnections()
	if _, err := wrong.Get(url); !errors.Is(err, ErrFingerprintMismatch) {
		t.Fatalf("GET with wrong pin: error = %v, want ErrFingerprintMismatch", err)
	}
	if _, err := PinnedHTTPClient(ChanJoin, "", time.Second); !errors.Is(err, ErrBadFingerprint) {
		t.Fatalf("PinnedHTTPClient without fingerprint: %v", err)
	}
}
