package mailrepl

import (
	"bytes"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/pmgcm/pmgcm/internal/testutil"
	"github.com/pmgcm/pmgcm/mailstore"
)

// TestDecodeEventsBound: an answer over the bound is refused with errTooLarge (the
// memory a peer can make this node hold is bounded), one under it decodes.
func TestDecodeEventsBound(t *testing.T) {
	old := maxEventsResponse
	maxEventsResponse = 1000
	t.Cleanup(func() { maxEventsResponse = old })
	ok := `{"events":[],"heads":{"1":3}}` + "\n"
	resp, err := DecodeEvents(strings.NewReader(ok))
	if err != nil || resp.Heads[1] != 3 {
		t.Fatalf("decode %q: %+v %v", ok, resp, err)
	}
	big := `{"events":[],"heads":{},"pad":"` + strings.Repeat("x", 1000) + `"}`
	if _, err := DecodeEvents(strings.NewReader(big)); !errors.Is(err, errTooLarge) || !errors.Is(err, ErrPeer) {
		t.Fatalf("decode of %d bytes: %v, want errTooLarge", len(big), err)
	}
	if _, err := DecodeEvents(strings.NewReader(`{"events":[{"seq":"x"}]}`)); !errors.Is(err, ErrPeer) {
		t.Fatalf("bad JSON: %v", err)
	}
}

// TestReplicatorShrinksBatch: a peer whose answers are too large for the bound at the
// normal batch size is asked for fewer events at once, and replication goes on.
func TestReplicatorShrinksBatch(t *testing.T) {
	old := maxEventsResponse
	maxEventsResponse = 4000 // a few events' worth
	t.Cleanup(func() { maxEventsResponse = old })
	src, err := mailstore.Open(t.TempDir(), mailstore.Options{LocalCID: func() uint64 { return 1 }, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = src.Close() })
	var want []mailstore.Meta
	for i := 0; i < 40; i++ {
		m, err := src.Accept("from@example.org", []string{"to@example.net"}, strings.NewReader("Subject: s"+strconv.Itoa(i)+"\r\n\r\nbody\r\n"))
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, m)
	}
	var maxLimit atomic.Int64
	h := Handler(src)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if l, _ := strconv.Atoi(r.URL.Query().Get("limit")); int64(l) > maxLimit.Load() {
			maxLimit.Store(int64(l))
		}
		h.ServeHTTP(w, r)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })

	dst, err := mailstore.Open(t.TempDir(), mailstore.Options{LocalCID: func() uint64 { return 2 }, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dst.Close() })
	cfg := DefaultConfig()
	cfg.Store = dst
	cfg.Client = &http.Client{Transport: &http.Transport{ResponseHeaderTimeout: 30 * time.Second}}
	cfg.Peers = func() []Peer { return []Peer{{CID: 1, Addr: ln.Addr().String()}} }
	cfg.Logger = hclog.New(&hclog.LoggerOptions{Level: hclog.Warn, Output: testWriter{t}})
	cfg.PollWait = time.Second
	cfg.PeerRefresh = 50 * time.Millisecond
	cfg.MinBackoff, cfg.MaxBackoff = 10*time.Millisecond, 200*time.Millisecond
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	r.Start()
	testutil.Poll(t, "every message replicated in small batches", 20*time.Second, testutil.Cond(func() bool {
		for _, m := range want {
			if !dst.HasBody(m.ID) {
				return false
			}
		}
		return true
	}))
	// The whole batch cannot fit: it was asked for (and refused), then fewer.
	evs, _ := src.EventsSince(nil, 0)
	full, _ := json.Marshal(EventsResponse{Events: evs})
	if int64(len(full)) <= maxEventsResponse || maxLimit.Load() != int64(DefaultPullBatch) {
		t.Fatalf("the test does not exercise the bound: %d bytes, largest limit asked %d", len(full), maxLimit.Load())
	}
}

// The events answer is the bytes json.Encoder wrote, whatever the order of the cursors.
func TestEncodeEventsMatchesEncodingJSON(t *testing.T) {
	at := time.Date(2026, 12, 3, 8, 0, 0, 1, time.UTC)
	m := mailstore.Meta{ID: "10-1", Origin: 10, Seq: 1, From: "<a&b>@example.org", To: []string{"c@example.net"},
		Subject: "ünï", Size: 12, SHA256: "ff", State: mailstore.StateQuarantined, Received: at}
	for _, resp := range []EventsResponse{
		{Events: []mailstore.Event{}, Heads: mailstore.Cursors{}},
		{Heads: nil},
		{Events: []mailstore.Event{{Origin: 10, Seq: 1, Kind: "new", MsgID: m.ID, Msg: &m, At: at},
			{Origin: 10, Seq: 2, Kind: "state", MsgID: m.ID, State: mailstore.StateReleased, At: at}},
			Heads: mailstore.Cursors{1: 5, 2: 7, 10: 2, 100: 1}, Skip: mailstore.Cursors{10: 1, 9: 3}},
	} {
		var want bytes.Buffer
		if err := json.NewEncoder(&want).Encode(resp); err != nil {
			t.Fatal(err)
		}
		got, err := encodeEvents(&resp)
		if err != nil || !bytes.Equal(got, want.Bytes()) {
			t.Fatalf("got %s (%v)\nwant %s", got, err, want.Bytes())
		}
		back, err := DecodeEvents(bytes.NewReader(got))
		if err != nil {
			t.Fatal(err)
		}
		var again EventsResponse
		if err := json.Unmarshal(got, &again); err != nil || !reflect.DeepEqual(*back, again) {
			t.Fatalf("decoded %+v, json.Unmarshal %+v (%v)", *back, again, err)
		}
	}
}
