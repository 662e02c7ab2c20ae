package mailrepl

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/internal/testutil"
	"github.com/pmgcm/pmgcm/mailstore"
)

func TestHandler(t *testing.T) {
	c := newCluster(t, 1)
	st := c.nodes[0].store
	// longPoll receives once the long poll below has reached the handler.
	longPoll := make(chan struct{}, 1)
	h := Handler(st)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("wait") == "10s" {
			select {
			case longPoll <- struct{}{}:
			default:
			}
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	m := c.accept(0, 2000)

	get := func(path string) (*http.Response, []byte) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}
	for _, bad := range []string{"/mail/v1/events?cursors=nope", "/mail/v1/events?limit=-1",
		"/mail/v1/events?wait=soon", "/mail/v1/body/" + m.ID + "?offset=x", "/mail/v1/body/..%2f..%2fetc"} {
		if resp, _ := get(bad); resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("%s: %s", bad, resp.Status)
		}
	}
	if resp, _ := get("/mail/v1/body/1-99"); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("unknown body: %s", resp.Status)
	}
	if resp, _ := get("/mail/v1/body/" + m.ID + "?offset=999999"); resp.StatusCode != http.StatusRequestedRangeNotSatisfiable {
		t.Fatalf("offset past the end: %s", resp.Status)
	}
	resp, b := get("/mail/v1/body/" + m.ID + "?offset=1500")
	if resp.StatusCode != 200 || int64(len(b)) != m.Size-1500 || resp.Header.Get(HeaderSHA256) != m.SHA256 || resp.Header.Get(HeaderSize) != strconv.FormatInt(m.Size, 10) {
		t.Fatalf("body from offset: %s %d %v", resp.Status, len(b), resp.Header)
	}

	// Serving a body that no longer matches its checksum makes the store
	// notice (the asker rejects it by its own check): it is marked missing.
	bad := c.accept(0, 3000)
	if _, err := st.Get(bad.ID); err != nil { // indexed, its final name linked
		t.Fatal(err)
	}
	if err := os.WriteFile(st.BodyPath(bad.ID), make([]byte, bad.Size), 0o600); err != nil {
		t.Fatal(err)
	}
	if resp, err := http.Get(srv.URL + PathBody + bad.ID); err == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	testutil.Poll(t, "corrupt body marked missing", 5*time.Second, testutil.Cond(func() bool { return !st.HasBody(bad.ID) }))

	var er EventsResponse
	resp, b = get("/mail/v1/events")
	if err := json.Unmarshal(b, &er); err != nil || len(er.Events) != 2 || er.Heads[1] != 2 {
		t.Fatalf("events: %s %s %v", resp.Status, b, err)
	}
	// A long poll returns as soon as the store changes.
	q := url.Values{"cursors": {`{"1":2}`}, "wait": {"10s"}}
	start := time.Now()
	go func() {
		// The change must come while the poll waits: it comes once the request is in the
		// handler, which reads the store in microseconds; the accept takes an fsync. (Were
		// it earlier, the answer would be the same, only the wake-up untested.)
		select {
		case <-longPoll:
			c.accept(0, 10)
		case <-time.After(10 * time.Second):
		}
	}()
	_, b = get("/mail/v1/events?" + q.Encode())
	if err := json.Unmarshal(b, &er); err != nil || len(er.Events) != 1 || er.Events[0].MsgID != "1-3" {
		t.Fatalf("long poll: %s %v", b, err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("long poll took %s", d)
	}
	// An empty long poll ends with the wait.
	q.Set("cursors", `{"1":3}`)
	q.Set("wait", "100ms")
	_, b = get("/mail/v1/events?" + q.Encode())
	if err := json.Unmarshal(b, &er); err != nil || len(er.Events) != 0 || er.Heads[1] != 3 {
		t.Fatalf("empty poll: %s %v", b, err)
	}
}

// TestHandlerBodies: PathBodies answers the bodies asked for in order, a frame of their
// own for those it does not hold, and 400 for a bad list of IDs.
func TestHandlerBodies(t *testing.T) {
	c := newCluster(t, 1) // node 0 serves Handler on its address
	a, b := c.accept(0, 3000), c.accept(0, 70_000)
	get := func(ids string) (*http.Response, []byte) {
		t.Helper()
		resp, err := http.Get("http://" + c.nodes[0].addr + PathBodies + "?ids=" + ids)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp, body
	}
	many := strings.TrimSuffix(strings.Repeat(a.ID+",", MaxBulkIDs+1), ",")
	for _, bad := range []string{"", "x", a.ID + ",,", a.ID + ",../etc", many} {
		if resp, body := get(bad); resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("ids %.40q: %s %.80s", bad, resp.Status, body)
		}
	}
	resp, body := get(b.ID + ",1-99," + a.ID)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: %s", resp.Status, body)
	}
	br := bufio.NewReader(bytes.NewReader(body))
	for _, want := range []struct {
		id string
		m  *mailstore.Meta
	}{{b.ID, &b}, {"1-99", nil}, {a.ID, &a}} {
		h, err := readFrameHead(br)
		if err != nil || h.id != want.id || h.held != (want.m != nil) {
			t.Fatalf("frame of %s: %+v %v", want.id, h, err)
		}
		if want.m == nil {
			continue
		}
		got := make([]byte, h.size)
		if _, err := io.ReadFull(br, got); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(got)
		if h.size != want.m.Size || h.sha256 != want.m.SHA256 || hex.EncodeToString(sum[:]) != want.m.SHA256 {
			t.Fatalf("body of %s: %d bytes, head %+v", want.id, len(got), h)
		}
	}
	if n := br.Buffered(); n != 0 {
		t.Fatalf("%d bytes after the last frame", n)
	}
}
