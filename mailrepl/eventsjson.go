package mailrepl

import (
	"encoding/json"
	"slices"
	"strconv"

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
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, strconv.FormatUint(k, 10))
	}
	slices.Sort(keys)
	b = append(b, '{')
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		n, _ := strconv.ParseUint(k, 10, 64)
		b = append(b, '"')
		b = append(b, k...)
		b = append(b, `":`...)
		b = strconv.AppendUint(b, c[n], 10)
	}
	return append(b, '}')
}

// eventsEnvelope is EventsResponse with its events left for mailstore's decoder.
type eventsEnvelope struct {
	Events json.RawMessage   `json:"events"`
	Heads  mailstore.Cursors `json:"heads"`
	Skip   mailstore.Cursors `json:"skip,omitempty"`
}

// decodeEvents is json.Unmarshal(b, out).
func decodeEvents(b []byte, out *EventsResponse) error {
	var env eventsEnvelope
	if err := json.Unmarshal(b, &env); err != nil {
		return err
	}
	out.Heads, out.Skip = env.Heads, env.Skip
	if env.Events == nil {
		return nil
	}
	evs, err := mailstore.DecodeEventsJSON(env.Events)
	out.Events = evs
	return err
}
