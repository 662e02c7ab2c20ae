package daemon

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/api"
)

// TestStreamJSONMatchesWholeEncoding: a streamed list is byte for byte the answer that
// writeJSON gives for the whole value, so older clients read it as before: empty, one
// entry, and more than a flush buffer of entries with characters JSON escapes.
func TestStreamJSONMatchesWholeEncoding(t *testing.T) {
	v := "<a> & \"b\"\n\u2028"
	big := make([]api.ConfigEntry, 3000)
	for i := range big {
		big[i] = api.ConfigEntry{Key: "k/" + string(rune('a'+i%26)), Version: uint64(i), Size: len(v), Value: &v}
	}
	for name, entries := range map[string][]api.ConfigEntry{
		"empty": {},
		"one":   {{Key: "x", Version: 1, Size: 1, ValueBase64: "/w=="}},
		"big":   big,
	} {
		whole := httptest.NewRecorder()
		writeJSON(whole, http.StatusOK, api.ConfigList{Entries: entries})
		streamed := httptest.NewRecorder()
		streamJSON(streamed, `{"entries":[`, `]}`, len(entries), func(i int) any { return entries[i] })
		if streamed.Code != http.StatusOK || streamed.Header().Get("Content-Type") != "application/json" {
			t.Fatalf("%s: code %d, content type %q", name, streamed.Code, streamed.Header().Get("Content-Type"))
		}
		if streamed.Body.String() != whole.Body.String() {
			t.Errorf("%s: streamed answer differs from the whole encoding:\n%.300s\nwant\n%.300s", name, streamed.Body, whole.Body)
		}
	}
	msgs := []api.QuarantineMessage{
		{ID: "a", From: "<x@y>", To: []string{"b@c"}, Subject: "s & t", Size: 3, State: "quarantined", Received: time.Unix(5, 0).UTC()},
		{ID: "b"},
	}
	for _, list := range [][]api.QuarantineMessage{{}, msgs} {
		whole := httptest.NewRecorder()
		writeJSON(whole, http.StatusOK, list)
		streamed := httptest.NewRecorder()
		streamJSON(streamed, "[", "]", len(list), func(i int) any { return list[i] })
		if streamed.Body.String() != whole.Body.String() {
			t.Errorf("quarantine list of %d: streamed %q, want %q", len(list), streamed.Body, whole.Body)
		}
	}
}
