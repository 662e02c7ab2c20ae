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
// returns a body beyond its bound, stops only with errTorn, and a record it returns
// encodes to one that decodes the same. The fuzzed bytes are the payload of one
// record (framed with its length and CRC, so that mutations reach the payload's
// decoder) followed by raw bytes as a segment's tail.
func FuzzReadSegment(f *testing.F) {
	for i, r := range []jrecord{
		{kind: recInline, meta: Meta{ID: "1-1", Origin: 1, Seq: 1, Size: 4, To: []string{"b@example.net"}}, spooled: "accept-1", body: []byte("body")},
		{kind: recSpooled, meta: Meta{ID: "1-2", Origin: 1, Seq: 2, Size: 1 << 20}, spooled: "accept-2"},
	} {
		r.at = time.Unix(int64(i), 0).UTC()
		enc, err := appendRecord(nil, &r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(enc[8:], enc)
		f.Add(enc[8:], enc[:len(enc)-3])
	}
	f.Add([]byte{recInline}, []byte("\xff\xff\xff\xff\x00\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, payload, tail []byte) {
		seg := []byte(journalMagic)
		seg = binary.BigEndian.AppendUint32(seg, uint32(len(payload)))
		seg = binary.BigEndian.AppendUint32(seg, crc32.Checksum(payload, crcTable))
		seg = append(append(seg, payload...), tail...)
		err := readSegment(bytes.NewReader(seg), func(r *jrecord) error {
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
		if err != nil && !errors.Is(err, errTorn) {
			t.Fatalf("readSegment: %v, want nil or errTorn", err)
		}
	})
}
