package mailstore

import (
	"encoding/json"
	"strconv"
	"time"
	"unicode/utf8"
)

// The JSON of the index's records and events (bbolt values, journal records, the events
// peers fetch) without encoding/json's reflection, which was a tenth of a 3-node
// cluster's CPU at full intake (docs/performance.md).
//
// The encoders write exactly the bytes json.Marshal writes (a test and a fuzz target
// compare them): nothing stored or sent changes, and nodes of any release read each
// other. Where a value needs what json.Marshal does with escapes (HTML characters,
// control characters, non-ASCII text) they call it for that string.
//
// The decoders read the form json.Marshal writes, the only one this code writes, and
// hand anything else (escapes, unknown or repeated keys, other spellings of numbers,
// nulls where a value was written) to json.Unmarshal, which then decides, as it did
// before: the result is always json.Unmarshal's (the fuzz target checks that the fast
// path never accepts what json.Unmarshal would refuse or read differently).

// appendMetaFields appends m's fields, without braces, as json.Marshal orders them.
func appendMetaFields(b []byte, m *Meta) ([]byte, error) {
	b = append(b, `"id":`...)
	b = appendString(b, m.ID)
	b = append(b, `,"origin_cid":`...)
	b = strconv.AppendUint(b, m.Origin, 10)
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, m.Seq, 10)
	b = append(b, `,"from":`...)
	b = appendString(b, m.From)
	b = append(b, `,"to":`...)
	if m.To == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i, t := range m.To {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, t)
		}
		b = append(b, ']')
	}
	b = append(b, `,"subject":`...)
	b = appendString(b, m.Subject)
	b = append(b, `,"size":`...)
	b = strconv.AppendInt(b, m.Size, 10)
	b = append(b, `,"sha256":`...)
	b = appendString(b, m.SHA256)
	b = append(b, `,"state":`...)
	b = appendString(b, m.State)
	b = append(b, `,"received":`...)
	b, err := appendTime(b, m.Received)
	if err != nil {
		return nil, err
	}
	if m.HaveBody {
		b = append(b, `,"have_body":true`...)
	}
	return b, nil
}

// marshalMeta is json.Marshal(m).
func marshalMeta(m *Meta) ([]byte, error) {
	b, err := appendMetaFields(append(make([]byte, 0, 384), '{'), m)
	if err != nil {
		return json.Marshal(m) // its error, as before
	}
	return append(b, '}'), nil
}

// marshalRecord is json.Marshal(r).
func marshalRecord(r *record) ([]byte, error) {
	b, err := appendMetaFields(append(make([]byte, 0, 384), '{'), &r.Meta)
	if err != nil {
		return json.Marshal(r) // its error, as before
	}
	if r.Purged {
		b = append(b, `,"purged":true`...)
	}
	return append(b, '}'), nil
}

// AppendEventJSON appends json.Marshal(e) to b, or returns json.Marshal's error.
func AppendEventJSON(b []byte, e *Event) ([]byte, error) {
	out, err := appendEvent(b, e)
	if err != nil {
		_, err = json.Marshal(e)
		return b, err
	}
	return out, nil
}

func appendEvent(b []byte, e *Event) ([]byte, error) {
	b = append(b, `{"origin":`...)
	b = strconv.AppendUint(b, e.Origin, 10)
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, e.Seq, 10)
	b = append(b, `,"kind":`...)
	b = appendString(b, e.Kind)
	b = append(b, `,"msg_id":`...)
	b = appendString(b, e.MsgID)
	if e.Msg != nil {
		b = append(b, `,"msg":{`...)
		var err error
		if b, err = appendMetaFields(b, e.Msg); err != nil {
			return nil, err
		}
		b = append(b, '}')
	}
	if e.State != "" {
		b = append(b, `,"state":`...)
		b = appendString(b, e.State)
	}
	b = append(b, `,"at":`...)
	b, err := appendTime(b, e.At)
	if err != nil {
		return nil, err
	}
	return append(b, '}'), nil
}

// appendString appends s as json.Marshal quotes it: printable ASCII other than the
// characters it escapes goes as is, anything else through json.Marshal.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string always encodes
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// appendTime appends t as Time.MarshalJSON does; it fails where that fails (a year
// outside 0-9999), and the caller then returns json.Marshal's error.
func appendTime(b []byte, t time.Time) ([]byte, error) {
	b = append(b, '"')
	b, err := t.AppendText(b)
	if err != nil {
		return nil, err
	}
	return append(b, '"'), nil
}

// decodeRecord is json.Unmarshal(v, r) for a zero r.
func decodeRecord(v []byte, r *record) error {
	d := decoder{b: v}
	if d.top(func(key []byte) int {
		if string(key) == "purged" {
			r.Purged = d.boolean()
			return 12
		}
		return d.metaField(key, &r.Meta)
	}) {
		return nil
	}
	*r = record{}
	return json.Unmarshal(v, r)
}

// decodeMeta is json.Unmarshal(v, m) for a zero m.
func decodeMeta(v []byte, m *Meta) error {
	d := decoder{b: v}
	if d.top(func(key []byte) int { return d.metaField(key, m) }) {
		return nil
	}
	*m = Meta{}
	return json.Unmarshal(v, m)
}

// DecodeEventJSON is json.Unmarshal(v, e) for a zero e.
func DecodeEventJSON(v []byte, e *Event) error {
	d := decoder{b: v}
	if d.top(func(key []byte) int { return d.eventField(key, e) }) {
		return nil
	}
	*e = Event{}
	return json.Unmarshal(v, e)
}

// DecodeEventsJSON is json.Unmarshal(v, &events) for a JSON array of events.
func DecodeEventsJSON(v []byte) ([]Event, error) {
	if out, ok := decodeEventArray(v); ok {
		return out, nil
	}
	var out []Event
	err := json.Unmarshal(v, &out)
	return out, err
}

func decodeEventArray(v []byte) ([]Event, bool) {
	d := decoder{b: v, ok: true}
	d.expect('[')
	out := []Event{}
	if d.ok && d.peek() == ']' {
		d.i++
	} else {
		for d.ok {
			var e Event
			d.object(func(key []byte) int { return d.eventField(key, &e) })
			out = append(out, e)
			c := d.peek()
			if c == ']' {
				d.i++
				break
			}
			if c != ',' {
				d.ok = false
			}
			d.i++
		}
	}
	d.ws()
	return out, d.ok && d.i == len(d.b)
}

// decoder reads the JSON json.Marshal writes. Any other form, valid or not, clears ok,
// and the caller hands the input to json.Unmarshal instead.
type decoder struct {
	b  []byte
	i  int
	ok bool
}

// top reads one object, its fields by field, then the end of the input.
func (d *decoder) top(field func(key []byte) int) bool {
	d.ok = true
	d.object(field)
	d.ws()
	return d.ok && d.i == len(d.b)
}

func (d *decoder) ws() {
	for d.i < len(d.b) {
		switch d.b[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

// peek returns the next byte after white space, 0 at the end.
func (d *decoder) peek() byte {
	d.ws()
	if d.i < len(d.b) {
		return d.b[d.i]
	}
	return 0
}

func (d *decoder) expect(c byte) {
	if d.peek() != c {
		d.ok = false
		return
	}
	d.i++
}

// object reads {"key":value,...}; field reads each value and returns the key's number
// (1-63), 0 for an unknown key.
func (d *decoder) object(field func(key []byte) int) {
	d.expect('{')
	if !d.ok {
		return
	}
	if d.peek() == '}' {
		d.i++
		return
	}
	var seen uint64
	for d.ok {
		key := d.rawStr()
		d.expect(':')
		if !d.ok {
			return
		}
		n := field(key[1 : len(key)-1])
		if n == 0 || seen&(1<<n) != 0 {
			d.ok = false // unknown, or repeated: json.Unmarshal merges a repeated key
			return
		}
		seen |= 1 << n
		switch d.peek() {
		case ',':
			d.i++
		case '}':
			d.i++
			return
		default:
			d.ok = false
		}
	}
}

// rawStr returns a string literal, quotes included: one without escapes or control
// characters, in valid UTF-8, which json.Unmarshal would take as is.
func (d *decoder) rawStr() []byte {
	if d.peek() != '"' {
		d.ok = false
		return nil
	}
	start := d.i
	ascii := true
	for j := d.i + 1; j < len(d.b); j++ {
		switch c := d.b[j]; {
		case c == '"':
			d.i = j + 1
			if !ascii && !utf8.Valid(d.b[start+1:j]) {
				d.ok = false
			}
			return d.b[start:d.i]
		case c == '\\' || c < 0x20:
			d.ok = false
			return nil
		case c >= 0x80:
			ascii = false
		}
	}
	d.ok = false
	return nil
}

func (d *decoder) str() string {
	s := d.rawStr()
	if !d.ok {
		return ""
	}
	switch s := s[1 : len(s)-1]; string(s) {
	case "": // the states and kinds of every event and record, without an allocation
		return ""
	case StateQuarantined:
		return StateQuarantined
	case StateReleased:
		return StateReleased
	case StateDeleted:
		return StateDeleted
	case "new":
		return "new"
	case "state":
		return "state"
	default:
		return string(s)
	}
}

// digits returns a run of digits as JSON writes an integer: no leading zero.
func (d *decoder) digits() []byte {
	j := d.i
	for j < len(d.b) && d.b[j] >= '0' && d.b[j] <= '9' {
		j++
	}
	n := d.b[d.i:j]
	if len(n) == 0 || (n[0] == '0' && len(n) > 1) {
		d.ok = false
		return nil
	}
	d.i = j
	return n
}

func (d *decoder) uint() uint64 {
	d.ws()
	n := d.digits()
	if !d.ok {
		return 0
	}
	v, err := strconv.ParseUint(string(n), 10, 64)
	if err != nil {
		d.ok = false
	}
	return v
}

func (d *decoder) int() int64 {
	d.ws()
	start := d.i
	if d.i < len(d.b) && d.b[d.i] == '-' {
		d.i++
	}
	d.digits()
	if !d.ok {
		return 0
	}
	v, err := strconv.ParseInt(string(d.b[start:d.i]), 10, 64)
	if err != nil {
		d.ok = false
	}
	return v
}

// literal reads word (true, false, null) if it comes next.
func (d *decoder) literal(word string) bool {
	d.ws()
	if len(d.b)-d.i >= len(word) && string(d.b[d.i:d.i+len(word)]) == word {
		d.i += len(word)
		return true
	}
	return false
}

func (d *decoder) boolean() bool {
	switch {
	case d.literal("true"):
		return true
	case d.literal("false"):
		return false
	}
	d.ok = false
	return false
}

// time reads a time as json.Unmarshal does: Time.UnmarshalJSON of the literal.
func (d *decoder) time() time.Time {
	var t time.Time
	if s := d.rawStr(); d.ok {
		if t.UnmarshalJSON(s) != nil {
			d.ok = false
		}
	}
	return t
}

func (d *decoder) strings() []string {
	if d.literal("null") {
		return nil
	}
	d.expect('[')
	out := []string{}
	if !d.ok {
		return nil
	}
	if d.peek() == ']' {
		d.i++
		return out
	}
	for d.ok {
		out = append(out, d.str())
		switch d.peek() {
		case ',':
			d.i++
		case ']':
			d.i++
			return out
		default:
			d.ok = false
		}
	}
	return nil
}

func (d *decoder) metaField(key []byte, m *Meta) int {
	switch string(key) {
	case "id":
		m.ID = d.str()
		return 1
	case "origin_cid":
		m.Origin = d.uint()
		return 2
	case "seq":
		m.Seq = d.uint()
		return 3
	case "from":
		m.From = d.str()
		return 4
	case "to":
		m.To = d.strings()
		return 5
	case "subject":
		m.Subject = d.str()
		return 6
	case "size":
		m.Size = d.int()
		return 7
	case "sha256":
		m.SHA256 = d.str()
		return 8
	case "state":
		m.State = d.str()
		return 9
	case "received":
		m.Received = d.time()
		return 10
	case "have_body":
		m.HaveBody = d.boolean()
		return 11
	}
	return 0
}

func (d *decoder) eventField(key []byte, e *Event) int {
	switch string(key) {
	case "origin":
		e.Origin = d.uint()
		return 1
	case "seq":
		e.Seq = d.uint()
		return 2
	case "kind":
		e.Kind = d.str()
		return 3
	case "msg_id":
		e.MsgID = d.str()
		return 4
	case "msg":
		if !d.literal("null") {
			m := new(Meta)
			d.object(func(key []byte) int { return d.metaField(key, m) })
			e.Msg = m
		}
		return 5
	case "state":
		e.State = d.str()
		return 6
	case "at":
		e.At = d.time()
		return 7
	}
	return 0
}
