package client

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/internal/synchttp"
)

// serveCounting serves h on a fresh unix socket and counts the connections it accepts.
func serveCounting(t *testing.T, h http.Handler) (path string, conns *atomic.Int64) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "s.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	conns = new(atomic.Int64)
	srv := &http.Server{Handler: h, ConnState: func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return path, conns
}

// valueHandler answers config gets with value and version 7, and writes with a version.
func valueHandler(value []byte) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet:
			w.Header().Set(api.HeaderVersion, "7")
			_, _ = w.Write(value)
		default:
			b, _ := io.ReadAll(r.Body)
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"key":"` + string(b) + `","version":8}`))
		}
	})
}

// TestSyncTransportKeepsConnection: sequential calls share one connection; a body closed
// before its end costs that connection and the next call dials another.
func TestSyncTransportKeepsConnection(t *testing.T) {
	value := bytes.Repeat([]byte("v"), 300)
	path, conns := serveCounting(t, valueHandler(value))
	c := New(path)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := 0; i < 50; i++ {
		v, err := c.ConfigGet(ctx, "k", ReadOptions{})
		if err != nil || !bytes.Equal(v.Value, value) || v.Version != 7 {
			t.Fatalf("get %d = %+v, %v", i, v, err)
		}
		wr, err := c.ConfigSet(ctx, "k", []byte("k"), WriteOptions{})
		if err != nil || wr.Version != 8 {
			t.Fatalf("set %d = %+v, %v", i, wr, err)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("100 sequential calls used %d connections, want 1", n)
	}

	resp, err := c.do(ctx, http.MethodGet, api.PathConfig, nil, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := resp.Body.Read(make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if _, err := resp.Body.Read(make([]byte, 10)); !errors.Is(err, http.ErrBodyReadAfterClose) {
		t.Errorf("read after close: %v", err)
	}
	if _, err := c.ConfigGet(ctx, "k", ReadOptions{}); err != nil {
		t.Fatal(err)
	}
	if n := conns.Load(); n != 2 {
		t.Errorf("after a body closed early: %d connections, want 2", n)
	}
}

// TestSyncTransportConcurrent: concurrent calls of one Client each get their answer.
func TestSyncTransportConcurrent(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(api.HeaderVersion, "1")
		_, _ = w.Write([]byte(r.URL.Query().Get("key")))
	})
	path, _ := serveCounting(t, h)
	c := New(path)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 100; i++ {
				key := strings.Repeat("k", w+1) + "/" + string(rune('a'+i%26))
				v, err := c.ConfigGet(context.Background(), key, ReadOptions{})
				if err != nil || string(v.Value) != key {
					errs <- errors.New("get " + key + " = " + string(v.Value))
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// closeAfterOne is a daemon that answers the first request of each connection and then
// closes it without saying so (no Connection: close), as an idle timeout does between
// two requests; it counts the requests it reads and sends on closed once it has closed.
func closeAfterOne(t *testing.T) (path string, requests *atomic.Int64, closed chan struct{}) {
	t.Helper()
	requests = new(atomic.Int64)
	closed = make(chan struct{}, 100)
	path = serveUnix(t, func(conn net.Conn) {
		defer func() { closed <- struct{}{} }()
		req, err := http.ReadRequest(bufio.NewReader(conn))
		if err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, req.Body)
		requests.Add(1)
		_, _ = io.WriteString(conn, "HTTP/1.1 200 OK\r\nX-Pmgcm-Version: 3\r\nContent-Type: application/json\r\nContent-Length: 27\r\n\r\n{\"key\":\"k\",\"version\":3}    ")
	})
	return path, requests, closed
}

// serveUnix listens on a unix socket in a temporary directory of t and runs handle on
// each connection it accepts, in a goroutine of its own, closing the connection after.
func serveUnix(t *testing.T, handle func(conn net.Conn)) (path string) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "s.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				handle(conn)
			}()
		}
	}()
	return path
}

// TestSyncTransportRetriesClosedIdle: a kept-alive connection the daemon has closed is
// replaced without the caller seeing it, for a read and for a write (the daemon took no
// byte of it), and no request reaches the daemon twice.
func TestSyncTransportRetriesClosedIdle(t *testing.T) {
	path, requests, closed := closeAfterOne(t)
	c := New(path)
	ctx := context.Background()
	for i := 0; i < 6; i++ {
		var err error
		if i%2 == 0 {
			_, err = c.ConfigGet(ctx, "k", ReadOptions{})
		} else {
			_, err = c.ConfigSet(ctx, "k", []byte("v"), WriteOptions{})
		}
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		<-closed // the kept connection is closed before the next call
	}
	if n := requests.Load(); n != 6 {
		t.Errorf("6 calls reached the daemon %d times", n)
	}
}

// dropSecond is a daemon that answers the requests of each connection but the second,
// which it reads and then closes the connection without an answer; it counts the requests
// it reads.
func dropSecond(t *testing.T) (path string, requests *atomic.Int64) {
	t.Helper()
	requests = new(atomic.Int64)
	path = serveUnix(t, func(conn net.Conn) {
		br := bufio.NewReader(conn)
		for n := 1; ; n++ {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, req.Body)
			requests.Add(1)
			if n == 2 {
				return
			}
			_, _ = io.WriteString(conn, "HTTP/1.1 200 OK\r\nX-Pmgcm-Version: 3\r\nContent-Type: application/json\r\nContent-Length: 23\r\n\r\n{\"key\":\"k\",\"version\":3}")
		}
	})
	return path, requests
}

// TestSyncTransportReadRepeated: a read whose kept-alive connection closes unanswered
// is sent again on a new connection.
func TestSyncTransportReadRepeated(t *testing.T) {
	path, requests := dropSecond(t)
	c := New(path)
	ctx := context.Background()
	for i := 0; i < 2; i++ {
		if _, err := c.ConfigGet(ctx, "k", ReadOptions{}); err != nil {
			t.Fatalf("get %d: %v", i, err)
		}
	}
	if n := requests.Load(); n != 3 {
		t.Errorf("the daemon read %d requests, want 3 (the dropped read sent again)", n)
	}
}

// TestSyncTransportWriteNotRepeated: a write whose connection closes after the daemon read
// it is not sent again: the caller learns the outcome is unknown.
func TestSyncTransportWriteNotRepeated(t *testing.T) {
	path, requests := dropSecond(t)
	c := New(path)
	ctx := context.Background()
	if _, err := c.ConfigSet(ctx, "k", []byte("a"), WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err := c.ConfigSet(ctx, "k", []byte("b"), WriteOptions{})
	if err == nil || !strings.Contains(err.Error(), "may or may not have been made") {
		t.Errorf("write on a connection closed unanswered: %v", err)
	}
	if n := requests.Load(); n != 2 {
		t.Errorf("the daemon read %d requests, want 2 (the write must not be repeated)", n)
	}
}

// TestSyncTransportContext: a call to a daemon that does not answer ends with its ctx,
// with an error that says so (context.DeadlineExceeded, context.Canceled).
func TestSyncTransportContext(t *testing.T) {
	release := make(chan struct{})
	arrived := make(chan struct{}, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("key") == "cancel" {
			arrived <- struct{}{}
		}
		if r.URL.Query().Get("key") == "stream" {
			w.Header().Set(api.HeaderVersion, "1")
			w.Header().Set("Content-Length", "100")
			_, _ = w.Write([]byte("part"))
			w.(http.Flusher).Flush()
		}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	path, _ := serveCounting(t, h)
	defer close(release)
	c := New(path)

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.ConfigGet(ctx, "k", ReadOptions{})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("get past its deadline: %v", err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("get past its deadline took %v", el)
	}

	// The deadline ends a read of the body too.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel2()
	_, err = c.ConfigGet(ctx2, "stream", ReadOptions{})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("body read past its deadline: %v", err)
	}

	ctx3, cancel3 := context.WithCancel(context.Background())
	go func() {
		<-arrived // canceled while the daemon holds the request
		cancel3()
	}()
	_, err = c.ConfigGet(ctx3, "cancel", ReadOptions{})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("get canceled: %v", err)
	}
}

// TestSyncTransportLargeBody: a body above synchttp.MaxDirectBody goes through net/http's Transport
// and arrives whole.
func TestSyncTransportLargeBody(t *testing.T) {
	var got atomic.Int64
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		got.Store(n)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"key":"k","version":1}`))
	})
	path, _ := serveCounting(t, h)
	c := New(path)
	big := bytes.Repeat([]byte("x"), synchttp.MaxDirectBody+1)
	if _, err := c.ConfigSet(context.Background(), "k", big, WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	if got.Load() != int64(len(big)) {
		t.Errorf("daemon read %d bytes of %d", got.Load(), len(big))
	}
}

// pipeClient returns a Client whose every connection is a pipe to a daemon that reads
// one request and answers it with answer, then closes.
func pipeClient(answer []byte) *Client {
	dial := func(ctx context.Context, _ string) (net.Conn, error) {
		c, d := net.Pipe()
		go func() {
			defer d.Close()
			_ = d.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := http.ReadRequest(bufio.NewReader(d)); err != nil {
				return
			}
			_, _ = d.Write(answer)
		}()
		return c, nil
	}
	return &Client{socketPath: "pipe", userAgent: defaultUserAgent,
		hc: &http.Client{Transport: &synchttp.Transport{Dial: dial, Fallback: http.DefaultTransport}}}
}

// TestSyncTransportAnswerHeadBound: an answer whose headers never end is refused once
// they pass synchttp.MaxAnswerHead, instead of filling memory.
func TestSyncTransportAnswerHeadBound(t *testing.T) {
	head := []byte("HTTP/1.1 200 OK\r\nX-Pad: " + strings.Repeat("p", synchttp.MaxAnswerHead) + "\r\n\r\n")
	c := pipeClient(head)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := c.ConfigGet(ctx, "k", ReadOptions{})
	if !errors.Is(err, synchttp.ErrAnswerHead) {
		t.Errorf("answer with %d bytes of headers: %v", len(head), err)
	}
}

// FuzzSyncTransportAnswer: whatever the daemon answers, a call ends (no panic, no hang)
// and the next call on the same Client works on.
func FuzzSyncTransportAnswer(f *testing.F) {
	f.Add([]byte("HTTP/1.1 200 OK\r\nX-Pmgcm-Version: 3\r\nContent-Length: 2\r\n\r\nab"))
	f.Add([]byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 13\r\n\r\n{\"message\":1}"))
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\nshort"))
	f.Add([]byte("HTTP/1.1 204 No Content\r\n\r\n"))
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, answer []byte) {
		c := pipeClient(answer)
		for i := 0; i < 2; i++ {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, _ = c.ConfigGet(ctx, "k", ReadOptions{})
			_, _ = c.Status(ctx)
			cancel()
		}
	})
}
