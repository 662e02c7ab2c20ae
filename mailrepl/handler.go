package mailrepl

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/pmgcm/pmgcm/mailstore"
)

// Paths and headers of the replication protocol.
const (
	PathEvents = "/mail/v1/events"
	PathBody   = "/mail/v1/body/"

	HeaderSize   = "X-Pmgcm-Mail-Size"
	HeaderSHA256 = "X-Pmgcm-Mail-Sha256"
)

// Limits of the events endpoint. DefaultBatch is what a node serves when the asker
// names no limit; DefaultPullBatch what a Replicator asks for (a first-release node
// serves up to MaxBatch too).
const (
	DefaultBatch     = 500
	DefaultPullBatch = 2000
	MaxBatch         = 5000
	// MaxWait caps a long poll; it stays below the 30 s response-header
	// timeout of the transport's HTTP client.
	MaxWait = 25 * time.Second
)

// MaxEventsResponse bounds the body of an answer of PathEvents that a node reads (and
// holds in memory): far above a batch of ordinary events (about 1 KiB each), and above
// any single event, whose fields SMTP intake bounds (a 64 KiB header, 100 recipients).
// A larger answer is refused (errTooLarge) and the replicator asks for fewer events.
const MaxEventsResponse = 32 << 20

// maxEventsResponse is MaxEventsResponse; tests lower it.
var maxEventsResponse int64 = MaxEventsResponse

// errTooLarge means an answer of PathEvents is over MaxEventsResponse.
var errTooLarge = errors.New("events answer too large")

// DecodeEvents reads an answer of PathEvents from a peer, at most MaxEventsResponse
// bytes. The events are checked one by one when they are applied
// (mailstore.ApplyEvents). Errors wrap ErrPeer.
func DecodeEvents(r io.Reader) (*EventsResponse, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxEventsResponse+1))
	if err != nil {
		return nil, fmt.Errorf("%w: events: %v", ErrPeer, err)
	}
	if int64(len(b)) > maxEventsResponse {
		return nil, fmt.Errorf("%w: %w: over %d bytes", ErrPeer, errTooLarge, maxEventsResponse)
	}
	var out EventsResponse
	if err := decodeEvents(b, &out); err != nil {
		return nil, fmt.Errorf("%w: events: %v", ErrPeer, err)
	}
	return &out, nil
}

// EventsResponse is the body of an answer of PathEvents.
type EventsResponse struct {
	Events []mailstore.Event `json:"events"`
	// Heads are the serving node's cursors, for the asker's backlog.
	Heads mailstore.Cursors `json:"heads"`
	// Skip holds, for each origin whose events the asker wants from below the serving
	// node's compaction floor, that floor: the asker skips to it (mailstore.SkipTo)
	// before it applies Events, which start above it.
	Skip mailstore.Cursors `json:"skip,omitempty"`
}

// Handler returns the replication endpoints of store, to be served to cluster
// members only (the transport's mail channel authenticates them).
func Handler(store *mailstore.Store) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+PathEvents, func(w http.ResponseWriter, r *http.Request) { serveEvents(store, w, r) })
	mux.HandleFunc("GET "+PathBody+"{id}", func(w http.ResponseWriter, r *http.Request) { serveBody(store, w, r) })
	mux.HandleFunc("GET "+PathBodies, func(w http.ResponseWriter, r *http.Request) { serveBodies(store, w, r) })
	return mux
}

// httpError answers a plain-text error.
func httpError(w http.ResponseWriter, code int, format string, args ...any) {
	http.Error(w, fmt.Sprintf(format, args...), code)
}

func serveEvents(store *mailstore.Store, w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	cursors := mailstore.Cursors{}
	if c := q.Get("cursors"); c != "" {
		if err := json.Unmarshal([]byte(c), &cursors); err != nil {
			httpError(w, http.StatusBadRequest, "bad cursors: %v", err)
			return
		}
	}
	limit := DefaultBatch
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n <= 0 {
			httpError(w, http.StatusBadRequest, "bad limit %q", l)
			return
		}
		limit = min(n, MaxBatch)
	}
	var wait time.Duration
	if s := q.Get("wait"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 {
			httpError(w, http.StatusBadRequest, "bad wait %q", s)
			return
		}
		wait = min(d, MaxWait)
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		changed := store.Changed() // before reading, so no change is missed
		evs, skip, heads, err := store.Feed(cursors, limit)
		if err != nil {
			httpError(w, http.StatusServiceUnavailable, "%v", err)
			return
		}
		if len(evs) > 0 || len(skip) > 0 || wait == 0 {
			writeEvents(w, EventsResponse{Events: evs, Heads: heads, Skip: skip})
			return
		}
		select {
		case <-changed:
		case <-timer.C:
			wait = 0
		case <-r.Context().Done():
			return
		}
	}
}

func writeEvents(w http.ResponseWriter, resp EventsResponse) {
	if resp.Events == nil {
		resp.Events = []mailstore.Event{}
	}
	if len(resp.Skip) == 0 {
		resp.Skip = nil
	}
	b, err := encodeEvents(&resp)
	if err != nil {
		httpError(w, http.StatusInternalServerError, "encode events: %v", err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}

func serveBody(store *mailstore.Store, w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var offset int64
	if o := r.URL.Query().Get("offset"); o != "" {
		n, err := strconv.ParseInt(o, 10, 64)
		if err != nil || n < 0 {
			httpError(w, http.StatusBadRequest, "bad offset %q", o)
			return
		}
		offset = n
	}
	f, meta, err := store.FeedBody(id)
	switch {
	case errors.Is(err, mailstore.ErrNotFound):
		httpError(w, http.StatusNotFound, "%v", err)
		return
	case errors.Is(err, mailstore.ErrInvalid):
		httpError(w, http.StatusBadRequest, "%v", err)
		return
	case err != nil:
		httpError(w, http.StatusServiceUnavailable, "%v", err)
		return
	}
	defer f.Close()
	if offset > meta.Size {
		httpError(w, http.StatusRequestedRangeNotSatisfiable, "offset %d past size %d", offset, meta.Size)
		return
	}
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		httpError(w, http.StatusInternalServerError, "%v", err)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set(HeaderSize, strconv.FormatInt(meta.Size, 10))
	h.Set(HeaderSHA256, meta.SHA256)
	h.Set("Content-Length", strconv.FormatInt(meta.Size-offset, 10))
	// A whole body is hashed on the way out: if it does not match, the
	// store verifies it, moves it aside and fetches it again from a peer
	// (the asker rejects it by its own check and tries another node).
	h256 := sha256.New()
	var src io.Reader = io.LimitReader(f, meta.Size-offset)
	if offset == 0 {
		src = io.TeeReader(src, h256)
	}
	n, err := io.Copy(w, src)
	if err != nil {
		return
	}
	if n < meta.Size-offset || offset == 0 && hex.EncodeToString(h256.Sum(nil)) != meta.SHA256 {
		_ = store.Verify(id)
		panic(http.ErrAbortHandler) // make the asker see a failed transfer
	}
}

// bodyURL and eventsURL build request URLs for a peer at addr ("ip:port").
func bodyURL(addr, id string, offset int64) string {
	return "http://" + addr + PathBody + id + "?offset=" + strconv.FormatInt(offset, 10)
}

func eventsURL(addr string, c mailstore.Cursors, limit int, wait time.Duration) string {
	b, _ := json.Marshal(c)
	q := url.Values{"cursors": {string(b)}, "limit": {strconv.Itoa(limit)}, "wait": {wait.String()}}
	return "http://" + addr + PathEvents + "?" + q.Encode()
}
