package mailstore

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

// codecSamples are values with what json.Marshal treats specially: HTML characters,
// escapes, non-ASCII and invalid UTF-8, U+2028, empty and nil lists, times in zones.
func codecSamples() []record {
	at := time.Date(2026, 12, 3, 8, 1, 2, 345678900, time.UTC)
	return []record{
		{},
		{Meta: Meta{ID: "1-1", Origin: 1, Seq: 1, From: "a@example.net", To: []string{"b@example.com"},
			Subject: "hello", Size: 20480, SHA256: "ab12", State: StateQuarantined, Received: at}},
		{Meta: Meta{ID: "7-99", Origin: 7, Seq: 1<<64 - 1, From: "<x&y>@example.net", To: []string{},
			Subject: "Grüße \u2028 \"q\" \\ \t\x01 \xff\xfe", Size: -1, State: StateDeleted,
			Received: at.In(time.FixedZone("", 5*3600+30*60)), HaveBody: true}, Purged: true},
		{Meta: Meta{ID: "2-3", To: []string{"", "c@example.com", "日本"}, Received: time.Unix(0, 0)}},
	}
}

func TestCodecMatchesEncodingJSON(t *testing.T) {
	for i, r := range codecSamples() {
		checkRecordCodec(t, r)
		m := r.Meta
		checkEventCodec(t, Event{Origin: m.Origin, Seq: m.Seq, Kind: "new", MsgID: m.ID, Msg: &m, At: m.Received})
		checkEventCodec(t, Event{Origin: 3, Seq: uint64(i), Kind: "state", MsgID: m.ID, State: m.State, At: m.Received})
	}
}

// The fast decoders take what the encoders write: they are not a detour to json.Unmarshal.
func TestCodecFastPathReadsItsOwnOutput(t *testing.T) {
	for _, r := range codecSamples() {
		v, err := marshalRecord(&r)
		if err != nil {
			t.Fatal(err)
		}
		var got record
		d := decoder{b: v}
		if !d.top(func(key []byte) int {
			if string(key) == "purged" {
				got.Purged = d.boolean()
				return 12
			}
			return d.metaField(key, &got.Meta)
		}) && utf8Clean(r) {
			t.Errorf("the fast path refused %s", v)
		}
	}
}

// utf8Clean says whether r's strings need no escapes (the fast path leaves those to json).
func utf8Clean(r record) bool {
	v, _ := json.Marshal(r)
	return !bytes.Contains(v, []byte(`\`))
}

// A time json.Marshal refuses is refused with its error.
func TestCodecTimeOutOfRange(t *testing.T) {
	r := record{Meta: Meta{Received: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}}
	_, want := json.Marshal(&r)
	if _, err := marshalRecord(&r); err == nil || err.Error() != want.Error() {
		t.Errorf("got %v, want %v", err, want)
	}
	ev := Event{At: r.Received}
	if _, err := AppendEventJSON(nil, &ev); err == nil {
		t.Error("an event of the year 10000 encoded")
	}
}

func checkRecordCodec(t *testing.T, r record) {
	t.Helper()
	want, werr := json.Marshal(&r)
	got, err := marshalRecord(&r)
	if (err != nil) != (werr != nil) || !bytes.Equal(got, want) {
		t.Fatalf("record:\n got %s (%v)\nwant %s (%v)", got, err, want, werr)
	}
	m, err := marshalMeta(&r.Meta)
	if w, _ := json.Marshal(&r.Meta); err != nil || !bytes.Equal(m, w) {
		t.Fatalf("meta:\n got %s (%v)\nwant %s", m, err, w)
	}
	if werr == nil {
		sameDecode(t, want)
	}
}

func checkEventCodec(t *testing.T, e Event) {
	t.Helper()
	want, werr := json.Marshal(&e)
	got, err := AppendEventJSON([]byte("x"), &e)
	if (err != nil) != (werr != nil) || (werr == nil && !bytes.Equal(got, append([]byte("x"), want...))) {
		t.Fatalf("event:\n got %s (%v)\nwant %s (%v)", got, err, want, werr)
	}
	if werr == nil {
		sameDecode(t, want)
		for _, list := range []string{"[]", "[" + string(want) + "]", " [ " + string(want) + " ,\n" + string(want) + "] "} {
			sameDecode(t, []byte(list))
		}
		if list, ok := decodeEventArray([]byte("[" + string(want) + "," + string(want) + "]")); !ok && !bytes.Contains(want, []byte(`\`)) {
			t.Errorf("the fast path refused a list of %s", want)
		} else if ok && len(list) != 2 {
			t.Errorf("a list of two events decoded as %d", len(list))
		}
	}
}

// sameDecode checks that each decoder reads v as json.Unmarshal does, or fails where it fails.
func sameDecode(t *testing.T, v []byte) {
	t.Helper()
	var r1, r2 record
	e1, e2 := decodeRecord(v, &r1), json.Unmarshal(v, &r2)
	same(t, "record", v, r1, r2, e1, e2)
	var m1, m2 Meta
	e1, e2 = decodeMeta(v, &m1), json.Unmarshal(v, &m2)
	same(t, "meta", v, m1, m2, e1, e2)
	var v1, v2 Event
	e1, e2 = DecodeEventJSON(v, &v1), json.Unmarshal(v, &v2)
	same(t, "event", v, v1, v2, e1, e2)
	var a2 []Event
	a1, e1 := DecodeEventsJSON(v)
	e2 = json.Unmarshal(v, &a2)
	same(t, "events", v, a1, a2, e1, e2)
}

func same(t *testing.T, what string, v []byte, got, want any, gotErr, wantErr error) {
	t.Helper()
	if (gotErr != nil) != (wantErr != nil) {
		t.Fatalf("%s of %q: error %v, json.Unmarshal's %v", what, v, gotErr, wantErr)
	}
	if gotErr == nil && !reflect.DeepEqual(got, want) {
		t.Fatalf("%s of %q:\n got %#v\nwant %#v", what, v, got, want)
	}
}

func FuzzCodec(f *testing.F) {
	for _, r := range codecSamples() {
		v, _ := json.Marshal(r)
		f.Add(v, r.ID, r.Subject, r.Origin, r.Size, r.Received.UnixNano(), 0, r.HaveBody)
	}
	f.Add([]byte(`{"msg":{"id":"a"},"msg":{"seq":2}}`), "", "", uint64(0), int64(0), int64(0), 3600, false)
	f.Add([]byte(`{"ID":"a","Seq":01,"to":[null],"at":null,"size":-0}`), "", "", uint64(0), int64(0), int64(0), 0, false)
	f.Add([]byte(` {"origin":1 , "at":"2026-12-03T08:00:00+01:00"}`+"\n"), "", "", uint64(0), int64(0), int64(0), 0, false)
	f.Add([]byte(`[{"origin":1},{"seq":2,"msg":null},]`), "", "", uint64(0), int64(0), int64(0), 0, false)
	f.Add([]byte(`[{"origin":1}] [`), "", "", uint64(0), int64(0), int64(0), 0, false)
	f.Fuzz(func(t *testing.T, raw []byte, s1, s2 string, n uint64, size, nanos int64, zone int, flag bool) {
		sameDecode(t, raw)
		at := time.Unix(0, nanos).In(time.FixedZone("", zone%(18*3600)))
		r := record{Meta: Meta{ID: s1, Origin: n, Seq: n >> 3, From: s2, To: []string{s1, s2}, Subject: s1 + s2,
			Size: size, SHA256: s2, State: s1, Received: at, HaveBody: flag}, Purged: !flag}
		if flag {
			r.To = nil
		}
		checkRecordCodec(t, r)
		m := r.Meta
		checkEventCodec(t, Event{Origin: n, Seq: uint64(size), Kind: s1, MsgID: s2, Msg: &m, State: s2, At: at})
	})
}

// BenchmarkRecordCodec compares the codec with encoding/json on an ordinary record.
func BenchmarkRecordCodec(b *testing.B) {
	r := codecSamples()[1]
	v, _ := json.Marshal(&r)
	b.Run("encode/json", func(b *testing.B) {
		for range b.N {
			_, _ = json.Marshal(&r)
		}
	})
	b.Run("encode/codec", func(b *testing.B) {
		for range b.N {
			_, _ = marshalRecord(&r)
		}
	})
	b.Run("decode/json", func(b *testing.B) {
		for range b.N {
			var x record
			_ = json.Unmarshal(v, &x)
		}
	})
	b.Run("decode/codec", func(b *testing.B) {
		for range b.N {
			var x record
			_ = decodeRecord(v, &x)
		}
	})
}
