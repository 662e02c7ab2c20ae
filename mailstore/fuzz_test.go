package mailstore

import (
	"encoding/json"
	"errors"
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
