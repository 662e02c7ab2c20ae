package mailrepl

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/mailstore"
)

// fuzzStore is a store with a few messages and a state change, for the fuzz targets.
func fuzzStore(f *testing.F, cid uint64) *mailstore.Store {
	f.Helper()
	st, err := mailstore.Open(f.TempDir(), mailstore.Options{LocalCID: func() uint64 { return cid }, Timeout: time.Second})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = st.Close() })
	for _, subj := range []string{"one", "two"} {
		m, err := st.Accept("a@example.org", []string{"b@example.net"}, strings.NewReader("Subject: "+subj+"\r\n\r\nbody\r\n"))
		if err != nil {
			f.Fatal(err)
		}
		if subj == "two" {
			if _, err := st.SetState(m.ID, mailstore.StateReleased); err != nil {
				f.Fatal(err)
			}
		}
	}
	return st
}

// FuzzDecodeEvents checks the decoder of a peer's events answer (the replication
// frame) and the check of the events it carries: DecodeEvents never panics and fails
// only with ErrPeer; ApplyEvents of whatever it decodes never panics and refuses a bad
// event with ErrInvalid or ErrGap, never another error.
func FuzzDecodeEvents(f *testing.F) {
	src := fuzzStore(f, 1)
	evs, err := src.EventsSince(nil, 0)
	if err != nil {
		f.Fatal(err)
	}
	for _, resp := range []EventsResponse{
		{Events: evs, Heads: src.Heads()},
		{Events: evs[:1], Heads: src.Heads(), Skip: mailstore.Cursors{1: 1}},
		{Events: []mailstore.Event{}, Heads: mailstore.Cursors{}},
	} {
		b, err := json.Marshal(resp)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"events":[{"origin":1,"seq":1,"kind":"new","msg_id":"1-1","msg":{"id":"1-1","origin_cid":1,"seq":1,"size":-1}}]}`))
	f.Add([]byte(`{"events":[{"origin":1,"seq":1,"kind":"state","msg_id":"1-1","state":"bogus"}]}`))
	// A repeated key json.Unmarshal merges, or refuses for its first value.
	f.Add([]byte(`{"events":[{"origin":1,"kind":"x"}],"Events":[{"seq":2}],"heads":{}}`))
	f.Add([]byte(`{"events":5,"events":[],"heads":{}}`))
	dst := fuzzStore(f, 2)
	f.Fuzz(func(t *testing.T, b []byte) {
		resp, err := DecodeEvents(strings.NewReader(string(b)))
		// It reads what json.Unmarshal read, and refuses what it refused.
		var want EventsResponse
		if werr := json.Unmarshal(b, &want); (err != nil) != (werr != nil) {
			t.Fatalf("DecodeEvents error %v, json.Unmarshal's %v", err, werr)
		} else if err == nil && !reflect.DeepEqual(*resp, want) {
			t.Fatalf("DecodeEvents read %+v, json.Unmarshal %+v", *resp, want)
		}
		if err != nil {
			if !errors.Is(err, ErrPeer) {
				t.Fatalf("DecodeEvents error %v wraps no ErrPeer", err)
			}
			return
		}
		if _, err := dst.ApplyEvents(resp.Events); err != nil &&
			!errors.Is(err, mailstore.ErrInvalid) && !errors.Is(err, mailstore.ErrGap) {
			t.Fatalf("ApplyEvents error %v wraps neither ErrInvalid nor ErrGap", err)
		}
		_ = dst.SkipTo(resp.Skip)
	})
}

// FuzzServeEvents checks the server's decoding of a peer's request (cursors, limit,
// wait, body ID and offset, the IDs of a bulk request): it never panics and answers
// 2xx, 4xx or 503.
func FuzzServeEvents(f *testing.F) {
	st := fuzzStore(f, 1)
	h := Handler(st)
	f.Add(`{"1":0}`, "10", "0s", "1-1", "0")
	f.Add(`{"1":1,"7":99}`, "5000", "", "1-2", "3")
	f.Add(`{"x":1}`, "-1", "-1s", "../etc", "-1")
	f.Add(`[]`, "99999999999999999999", "1h", "0-0", "999")
	f.Add(`{}`, "1", "0s", "1-1,1-2,1-9", "0")
	f.Fuzz(func(t *testing.T, cursors, limit, wait, id, offset string) {
		// A long poll waits when there is nothing new: never wait here.
		if d, err := time.ParseDuration(wait); err == nil && d > 0 {
			wait = "0s"
		}
		q := url.Values{"cursors": {cursors}, "limit": {limit}, "wait": {wait}}
		for _, target := range []string{PathEvents + "?" + q.Encode(), PathBody + url.PathEscape(id) + "?offset=" + url.QueryEscape(offset),
			PathBodies + "?ids=" + url.QueryEscape(id)} {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			req := httptest.NewRequestWithContext(ctx, http.MethodGet, "http://peer"+target, nil)
			rec := httptest.NewRecorder()
			func() {
				defer func() {
					// serveBody aborts a body that fails its check on the way out.
					if p := recover(); p != nil && p != http.ErrAbortHandler {
						t.Fatalf("%s: panic %v", target, p)
					}
				}()
				h.ServeHTTP(rec, req)
			}()
			cancel()
			if c := rec.Code; c >= 500 && c != http.StatusServiceUnavailable {
				t.Fatalf("%s: status %d: %s", target, c, rec.Body)
			}
		}
	})
}

// FuzzFrameHead checks the decoder of a frame head of a PathBodies answer (bulk.go):
// it never panics, reads at most maxFrameHead bytes, fails only with ErrPeer, and what
// it decodes is what serveFrame writes for it.
func FuzzFrameHead(f *testing.F) {
	f.Add([]byte("1-1 20480 " + strings.Repeat("ab", 32) + "\n"))
	f.Add([]byte("7-12 -\n"))
	f.Add([]byte("1-1 -1 " + strings.Repeat("0", 64) + "\n"))
	f.Add([]byte("01-1 5 x\n"))
	f.Add([]byte(strings.Repeat("9", 300) + "\n"))
	f.Add([]byte("1-1 5"))
	// Forms serveFrame never writes, which the decoder refuses.
	f.Add([]byte("1-1 05 " + strings.Repeat("ab", 32) + "\n"))
	f.Add([]byte("1-1 +5 " + strings.Repeat("ab", 32) + "\n"))
	f.Add([]byte("1-1 5 " + strings.Repeat("AB", 32) + "\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		br := bufio.NewReaderSize(bytes.NewReader(b), 4096)
		h, err := readFrameHead(br)
		if read := len(b) - br.Buffered(); err == nil && read > maxFrameHead {
			t.Fatalf("read %d bytes of a frame head", read)
		}
		if err != nil {
			if !errors.Is(err, ErrPeer) {
				t.Fatalf("error %v wraps no ErrPeer", err)
			}
			return
		}
		if h.held && h.sha256 != strings.ToLower(h.sha256) {
			t.Fatalf("decoded a SHA-256 not in lower case (Meta.SHA256's form): %q", h.sha256)
		}
		line := h.id + " -\n"
		if h.held {
			line = fmt.Sprintf("%s %d %s\n", h.id, h.size, h.sha256)
		}
		if !bytes.HasPrefix(b, []byte(line)) {
			t.Fatalf("decoded %+v from %q", h, b)
		}
	})
}
