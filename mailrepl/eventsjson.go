package mailrepl

import (
	"encoding/json"
	"slices"
	"strconv"
	"strings"

	"github.com/pmgcm/pmgcm/mailstore"
)

// The events answer without encoding/json's reflection on every event (see
// mailstore's codec.go): encodeEvents writes the bytes json.NewEncoder(w).Encode wrote,
// and decodeEvents reads what json.Unmarshal read, the events with mailstore's decoder.

// encodeEvents is json.Marshal(resp) and a newline, as json.Encoder writes it.
func encodeEvents(resp *EventsResponse) ([]byte, error) {
	b := make([]byte, 0, 128+400*len(resp.Events))
	b = append(b, `{"events":`...)
	if resp.Events == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i := range resp.Events {
			if i > 0 {
				b = append(b, ',')
			}
			var err error
			if b, err = mailstore.AppendEventJSON(b, &resp.Events[i]); err != nil {
				return nil, err
			}
		}
		b = append(b, ']')
	}
	b = append(b, `,"heads":`...)
	b = appendCursors(b, resp.Heads)
	if len(resp.Skip) > 0 {
		b = append(b, `,"skip":`...)
		b = appendCursors(b, resp.Skip)
	}
	return append(b, "}\n"...), nil
}

// appendCursors appends c as json.Marshal writes a map: keys in the order of their
// decimal strings.
func appendCursors(b []byte, c mailstore.Cursors) []byte {
	if c == nil {
		return append(b, "null"...)
	}
	type entry struct {
		key string
		val uint64
	}
	list := make([]entry, 0, len(c))
	for k, v := range c {
		list = append(list, entry{strconv.FormatUint(k, 10), v})
	}
	slices.SortFunc(list, func(a, b entry) int { return strings.Compare(a.key, b.key) })
	b = append(b, '{')
	for i, e := range list {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '"')
		b = append(b, e.key...)
		b = append(b, `":`...)
		b = strconv.AppendUint(b, e.val, 10)
	}
	return append(b, '}')
}

// eventsEnvelope is EventsResponse with its events left for mailstore's decoder.
type eventsEnvelope struct {
	Events rawEvents         `json:"events"`
	Heads  mailstore.Cursors `json:"heads"`
	Skip   mailstore.Cursors `json:"skip,omitempty"`
}

// rawEvents keeps the events' JSON and counts the keys that brought it: json.Unmarshal
// merges a repeated key ("events", "Events", ...) into one slice, which a raw value cannot.
type rawEvents struct {
	raw json.RawMessage
	n   int
}

func (r *rawEvents) UnmarshalJSON(b []byte) error {
	r.n++
	return r.raw.UnmarshalJSON(b)
}

// decodeEvents is json.Unmarshal(b, out).
func decodeEvents(b []byte, out *EventsResponse) error {
	var env eventsEnvelope
	if err := json.Unmarshal(b, &env); err != nil {
		return err
	}
	if env.Events.n > 1 {
		return json.Unmarshal(b, out)
	}
	out.Heads, out.Skip = env.Heads, env.Skip
	if env.Events.raw == nil {
		return nil
	}
	evs, err := mailstore.DecodeEventsJSON(env.Events.raw)
	out.Events = evs
	return err
}
