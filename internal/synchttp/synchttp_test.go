package synchttp

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/internal/testutil"
)

// server is a loopback HTTP server that answers each request with its path and counts
// the connections it accepts.
func server(t *testing.T) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var conns atomic.Int64
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.URL.Path)
	}))
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	s.Start()
	t.Cleanup(s.Close)
	return s, &conns
}

// countingFallback counts the requests it is given and sends them with net/http.
type countingFallback struct {
	n  atomic.Int64
	rt http.Transport
}

func (f *countingFallback) RoundTrip(req *http.Request) (*http.Response, error) {
	f.n.Add(1)
	return f.rt.RoundTrip(req)
}

func get(t *testing.T, c *http.Client, url string) string {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestOnlyFallbackAndIdle: the requests Only accepts go direct over one kept-alive
// connection per host, the others to Fallback; CloseIdleConnections makes the next
// request dial again.
func TestOnlyFallbackAndIdle(t *testing.T) {
	s1, conns1 := server(t)
	s2, conns2 := server(t)
	var dials atomic.Int64
	fb := &countingFallback{}
	tr := &Transport{
		Dial: func(ctx context.Context, addr string) (net.Conn, error) {
			dials.Add(1)
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr)
		},
		Fallback: fb,
		Only:     func(req *http.Request) bool { return strings.HasPrefix(req.URL.Path, "/direct") },
	}
	c := &http.Client{Transport: tr}
	for i := 0; i < 10; i++ {
		for _, s := range []*httptest.Server{s1, s2} {
			if got := get(t, c, s.URL+"/direct"); got != "/direct" {
				t.Fatalf("direct answer %q", got)
			}
		}
	}
	if d := dials.Load(); d != 2 {
		t.Errorf("20 direct requests to 2 hosts dialed %d times, want 2", d)
	}
	if got := get(t, c, s1.URL+"/other"); got != "/other" || fb.n.Load() != 1 {
		t.Errorf("other request: %q, fallback took %d", got, fb.n.Load())
	}
	c.CloseIdleConnections()
	get(t, c, s1.URL+"/direct")
	if d := dials.Load(); d != 3 {
		t.Errorf("after CloseIdleConnections: %d dials, want 3", d)
	}
	// s1: 2 direct connections and the fallback's one; s2: one.
	if conns1.Load() != 3 || conns2.Load() != 1 {
		t.Errorf("connections: %d and %d, want 3 and 1", conns1.Load(), conns2.Load())
	}
}

// TestWroteRequestTrace: the ClientTrace of the request's ctx hears that the request was
// written (cluster.Client tells "not sent" from it), and not when the dial failed.
func TestWroteRequestTrace(t *testing.T) {
	s, _ := server(t)
	fail := false
	tr := &Transport{Dial: func(ctx context.Context, addr string) (net.Conn, error) {
		if fail {
			return nil, errors.New("refused")
		}
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}}
	c := &http.Client{Transport: tr}
	for _, f := range []bool{false, true} {
		fail = f
		var wrote atomic.Bool
		ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
			WroteRequest: func(i httptrace.WroteRequestInfo) { wrote.Store(i.Err == nil) },
		})
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"/x", nil)
		resp, err := c.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
		}
		if wrote.Load() == f || (err != nil) != f {
			t.Errorf("dial failing %v: wrote %v, err %v", f, wrote.Load(), err)
		}
		c.CloseIdleConnections()
	}
}

// TestNoFallback: a request that cannot go direct fails plainly without a Fallback.
func TestNoFallback(t *testing.T) {
	tr := &Transport{Dial: func(context.Context, string) (net.Conn, error) { return nil, errors.New("no dial") }}
	req, _ := http.NewRequest(http.MethodPost, "http://h/x", io.NopCloser(strings.NewReader("streamed")))
	if _, err := tr.RoundTrip(req); !errors.Is(err, ErrNoFallback) {
		t.Errorf("streamed body without fallback: %v", err)
	}
}

// TestIdleTimeout: a connection idle for longer than IdleTimeout is closed, not reused.
func TestIdleTimeout(t *testing.T) {
	s, conns := server(t)
	tr := &Transport{IdleTimeout: time.Nanosecond, Dial: func(ctx context.Context, addr string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}}
	c := &http.Client{Transport: tr}
	for i := 0; i < 3; i++ {
		get(t, c, s.URL+"/x")
		time.Sleep(time.Millisecond) // lets the connection pass its 1 ns idle timeout
	}
	if n := conns.Load(); n != 3 {
		t.Errorf("3 requests past the idle timeout used %d connections, want 3", n)
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if n := len(tr.idle[s.Listener.Addr().String()]); n > 1 {
		t.Errorf("%d idle connections kept, want at most the last one", n)
	}
}

// TestInformationalAnswers: a 103 or 100 before the answer is read past (and given to
// the Got1xxResponse trace), so that each request gets its own answer and the next one on
// the connection does not get the answer of the one before.
func TestInformationalAnswers(t *testing.T) {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</x>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, r.URL.Path)
	}))
	t.Cleanup(s.Close)
	tr := &Transport{Dial: func(ctx context.Context, addr string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}}
	c := &http.Client{Transport: tr}
	var got1xx atomic.Int64
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		Got1xxResponse: func(code int, _ textproto.MIMEHeader) error {
			if code == http.StatusEarlyHints {
				got1xx.Add(1)
			}
			return nil
		},
	})
	for _, path := range []string{"/first", "/second", "/third"} {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || string(b) != path {
			t.Fatalf("%s: %d %q %v, want 200 and its own path", path, resp.StatusCode, b, err)
		}
	}
	if got1xx.Load() != 3 {
		t.Errorf("Got1xxResponse saw %d early hints, want 3", got1xx.Load())
	}
}

// TestCloseIdleConnectionsInFlight: a connection in use while CloseIdleConnections runs
// is closed when its request ends, not kept: the next request dials again.
func TestCloseIdleConnectionsInFlight(t *testing.T) {
	release := make(chan struct{})
	var conns atomic.Int64
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-release
		}
		_, _ = io.WriteString(w, r.URL.Path)
	}))
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	s.Start()
	t.Cleanup(s.Close)
	tr := &Transport{Dial: func(ctx context.Context, addr string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}}
	c := &http.Client{Transport: tr}
	done := make(chan string)
	go func() {
		resp, err := c.Get(s.URL + "/slow")
		if err != nil {
			done <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		done <- string(b)
	}()
	testutil.Poll(t, "the slow request's connection", 5*time.Second, func() error {
		if conns.Load() != 1 {
			return errors.New("not connected yet")
		}
		return nil
	})
	tr.CloseIdleConnections()
	close(release)
	if got := <-done; got != "/slow" {
		t.Fatalf("slow request: %q", got)
	}
	if got := get(t, c, s.URL+"/next"); got != "/next" {
		t.Fatalf("next request: %q", got)
	}
	if n := conns.Load(); n != 2 {
		t.Fatalf("%d connections, want 2: the one in use kept after CloseIdleConnections", n)
	}
	// The new connection is kept as usual.
	get(t, c, s.URL+"/again")
	if n := conns.Load(); n != 2 {
		t.Fatalf("%d connections after one more request, want 2", n)
	}
}

// TestSwitchingProtocolsRefused: an answer 101 (the server switching protocols, which this
// transport never asks for) fails the request and closes its connection; the next
// request dials again.
func TestSwitchingProtocolsRefused(t *testing.T) {
	var conns atomic.Int64
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/switch" {
			w.Header().Set("Connection", "Upgrade")
			w.Header().Set("Upgrade", "other")
			w.WriteHeader(http.StatusSwitchingProtocols)
			return
		}
		_, _ = io.WriteString(w, r.URL.Path)
	}))
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	s.Start()
	t.Cleanup(s.Close)
	tr := &Transport{Dial: func(ctx context.Context, addr string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}}
	c := &http.Client{Transport: tr}
	if resp, err := c.Get(s.URL + "/switch"); err == nil {
		_ = resp.Body.Close()
		t.Fatalf("101 answered %d, want an error", resp.StatusCode)
	} else if !strings.Contains(err.Error(), "switched protocols") {
		t.Fatalf("101: %v, want the switch refused", err)
	}
	if got := get(t, c, s.URL+"/next"); got != "/next" || conns.Load() != 2 {
		t.Fatalf("after the refused switch: %q over %d connections, want /next over 2", got, conns.Load())
	}
}
