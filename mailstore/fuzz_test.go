package mailstore

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"hash/crc32"
	"strings"
	"testing"
	"time"
)

// FuzzApplyEvents checks the check and merge of events received from a peer: whatever
// a peer sends (decoded as mailrepl decodes it, within its size bound), ApplyEvents
// never panics, refuses a bad event only with ErrInvalid or ErrGap, and leaves a store
// whose listing and stats still read.
func FuzzApplyEvents(f *testing.F) {
	src, err := Open(f.TempDir(), Options{LocalCID: func() uint64 { return 1 }, Timeout: time.Second})
	if err != nil {
		f.Fatal(err)
	}
	defer src.Close()
	m, err := src.Accept("a@example.org", []string{"b@example.net"}, strings.NewReader("Subject: s\r\n\r\nbody\r\n"))
	if err != nil {
		f.Fatal(err)
	}
	if _, err := src.SetState(m.ID, StateDeleted); err != nil {
		f.Fatal(err)
	}
	evs, err := src.EventsSince(nil, 0)
	if err != nil {
		f.Fatal(err)
	}
	b, _ := json.Marshal(evs)
	f.Add(b)
	b, _ = json.Marshal(evs[1:])
	f.Add(b)
	f.Add([]byte(`[{"origin":1,"seq":1,"kind":"new","msg_id":"1-1","msg":{"id":"1-1","origin_cid":1,"seq":1,"size":5,"sha256":"zz"}}]`))
	f.Add([]byte(`[{"origin":2,"seq":1,"kind":"state","msg_id":"2-1","state":"released"}]`))
	f.Add([]byte(`[{"origin":2,"seq":1,"kind":"future","msg_id":"2-1"}]`))
	dst, err := Open(f.TempDir(), Options{LocalCID: func() uint64 { return 3 }, Timeout: time.Second})
	if err != nil {
		f.Fatal(err)
	}
	defer dst.Close()
	f.Fuzz(func(t *testing.T, b []byte) {
		var evs []Event
		if json.Unmarshal(b, &evs) != nil {
			return
		}
		if _, err := dst.ApplyEvents(evs); err != nil && !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrGap) {
			t.Fatalf("ApplyEvents error %v wraps neither ErrInvalid nor ErrGap", err)
		}
		if _, err := dst.List(Filter{}); err != nil {
			t.Fatalf("List after ApplyEvents: %v", err)
		}
		if _, err := dst.Missing(); err != nil {
			t.Fatalf("Missing after ApplyEvents: %v", err)
		}
	})
}

// FuzzReadSegment checks the decoder of the intake journal (journal.go), which reads
// what a crash left on disk: whatever a segment holds, readSegment never panics nor
// returns a body beyond its bound, returns only records that were framed whole (a
// torn tail never decodes into one), and a record it returns encodes to one that
// decodes the same. The fuzzed bytes are the payloads of two records, each framed
// with its length and CRC so that mutations reach the payload's decoder, then raw
// bytes as the segment's tail.
func FuzzReadSegment(f *testing.F) {
	var encs [][]byte
	for i, r := range []jrecord{
		{kind: recInline, meta: Meta{ID: "1-1", Origin: 1, Seq: 1, Size: 4, To: []string{"b@example.net"}}, spooled: "accept-1", body: []byte("body")},
		{kind: recSpooled, meta: Meta{ID: "1-2", Origin: 1, Seq: 2, Size: 1 << 20}, spooled: "accept-2"},
		{kind: recInline, meta: Meta{ID: "1-3", Origin: 1, Seq: 3, Size: 2}, spooled: memSpooledName, body: []byte("in")}, // received into memory
	} {
		r.at = time.Unix(int64(i), 0).UTC()
		enc, err := appendRecord(nil, &r)
		if err != nil {
			f.Fatal(err)
		}
		encs = append(encs, enc)
	}
	f.Add(encs[0][8:], encs[1][8:], []byte(nil))
	f.Add(encs[1][8:], encs[0][8:], encs[0][:len(encs[0])-3])
	f.Add(encs[2][8:], encs[1][8:], []byte(nil))
	f.Add([]byte{recInline}, []byte{}, []byte("\xff\xff\xff\xff\x00\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, p1, p2, tail []byte) {
		seg := []byte(journalMagic)
		for _, p := range [][]byte{p1, p2} {
			seg = binary.BigEndian.AppendUint32(seg, uint32(len(p)))
			seg = binary.BigEndian.AppendUint32(seg, crc32.Checksum(p, crcTable))
			seg = append(seg, p...)
		}
		seg = append(seg, tail...)
		n := 0
		_ = readSegment(bytes.NewReader(seg), func(r *jrecord) error {
			n++
			if len(r.body) > maxInline {
				t.Fatalf("record body of %d bytes, bound %d", len(r.body), maxInline)
			}
			enc, err := appendRecord(nil, r)
			if err != nil {
				t.Fatalf("a decoded record does not encode: %v", err)
			}
			again, err := decodePayload(enc[8:])
			if err != nil || again.meta.ID != r.meta.ID || again.kind != r.kind || again.spooled != r.spooled ||
				!bytes.Equal(again.body, r.body) || !again.at.Equal(r.at) || again.meta.SHA256 != r.meta.SHA256 {
				t.Fatalf("record %s does not decode the same after encoding (%v)", r.meta.ID, err)
			}
			return nil
		})
		// The tail can hold whole records only if its own framing is right: count
		// those the tail alone decodes to, and no more may come out.
		m := 0
		_ = readSegment(bytes.NewReader(append([]byte(journalMagic), tail...)), func(*jrecord) error { m++; return nil })
		if n > 2+m {
			t.Fatalf("%d records decoded from 2 framed payloads and a tail of %d", n, m)
		}
	})
}
