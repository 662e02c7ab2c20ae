package transport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
)

// TestRefusalCarriesEpoch: a member refused for a reason it must know (fenced) learns
// the server's cluster and epoch from the refused Dial, and the Refused hook is told;
// a dialer of the first release, which expects only the acknowledgement, still sees a
// refused dial.
func TestRefusalCarriesEpoch(t *testing.T) {
	noLeaks(t)
	ca := newTestCA(t)
	fenced := nodeIdentity(t, ca, "fenced", loopback)
	server := openMux(t, nodeIdentity(t, ca, "server", loopback), withAuthorizer(func(ch Channel, fp string) error {
		if fp == fenced.Fingerprint && ch != ChanAny && ch != ChanJoin {
			return fmt.Errorf("cid 2 is fenced: %w", &Refusal{ClusterID: "c1", Epoch: 3, Reason: "fenced"})
		}
		return nil
	}))
	var (
		mu   sync.Mutex
		told []Refusal
	)
	client := openMux(t, fenced, func(c *Config) {
		c.Refused = func(addr string, r Refusal) {
			mu.Lock()
			told = append(told, r)
			mu.Unlock()
		}
	})
	_, err := client.Dial(context.Background(), server.Addr().String(), ChanRaft)
	var r *Refusal
	if !errors.Is(err, ErrPeerRefused) || !errors.As(err, &r) || r.Epoch != 3 || r.ClusterID != "c1" {
		t.Fatalf("Dial of a fenced member: %v (%+v)", err, r)
	}
	mu.Lock()
	if len(told) != 1 || told[0].Epoch != 3 {
		t.Errorf("Refused hook told %+v", told)
	}
	mu.Unlock()
	// The join channel stays open to it.
	c, err := client.Dial(context.Background(), server.Addr().String(), ChanJoin)
	if err != nil {
		t.Fatalf("join channel of a fenced member: %v", err)
	}
	_ = c.Close()
	// A 1ca55cd dialer reads one byte and wants the channel back: it gets the marker.
	if err := rawDial(server.Addr().String(), &fenced.Cert, byte(ChanRaft)); err == nil || !strings.Contains(err.Error(), "bad acknowledgement") {
		t.Errorf("an old dialer refused with a record: %v", err)
	}
}

// TestUnexplainedRefusal: a refusal without a record (an old server, or a refusal at the
// handshake) is the zero Refusal, reads as ErrPeerRefused, and is told too.
func TestUnexplainedRefusal(t *testing.T) {
	noLeaks(t)
	ca := newTestCA(t)
	deleted := nodeIdentity(t, ca, "deleted", loopback)
	server := openMux(t, nodeIdentity(t, ca, "server", loopback), withAuthorizer(func(Channel, string) error {
		return ErrPeerRefused
	}))
	var n int
	var mu sync.Mutex
	client := openMux(t, deleted, func(c *Config) {
		c.Refused = func(string, Refusal) { mu.Lock(); n++; mu.Unlock() }
	})
	_, err := client.Dial(context.Background(), server.Addr().String(), ChanRPC)
	var r *Refusal
	if !errors.Is(err, ErrPeerRefused) || !errors.As(err, &r) || r.Epoch != 0 {
		t.Fatalf("Dial of a deleted member: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if n != 1 {
		t.Errorf("Refused hook told %d times", n)
	}
}

// TestRefusalRecord: a record round-trips, and one over MaxRefusalBytes is refused.
func TestRefusalRecord(t *testing.T) {
	var buf bytes.Buffer
	if err := writeRefusal(&buf, &Refusal{ClusterID: "c", Epoch: 9, Reason: "fenced"}); err != nil {
		t.Fatal(err)
	}
	if buf.Bytes()[0] != refusalMarker {
		t.Fatalf("marker %d", buf.Bytes()[0])
	}
	r, err := readRefusal(bytes.NewReader(buf.Bytes()[1:]))
	if err != nil || r.Epoch != 9 || r.ClusterID != "c" || r.Reason != "fenced" {
		t.Fatalf("read back %+v, %v", r, err)
	}
	if _, err := readRefusal(bytes.NewReader([]byte{0xff, 0xff})); err == nil {
		t.Fatal("a record of 65535 bytes was accepted")
	}
	buf.Reset()
	_ = writeRefusal(&buf, &Refusal{Epoch: 1, Reason: strings.Repeat("x", 2*MaxRefusalBytes)})
	if r, err := readRefusal(bytes.NewReader(buf.Bytes()[1:])); err != nil || r.Epoch != 1 {
		t.Fatalf("a long reason was not cut: %+v, %v", r, err)
	}
}

// FuzzReadRefusal: any bytes after the marker give a record or an error, never a panic
// or a read beyond the bound.
func FuzzReadRefusal(f *testing.F) {
	var buf bytes.Buffer
	_ = writeRefusal(&buf, &Refusal{ClusterID: "c", Epoch: 2, Reason: "fenced"})
	f.Add(buf.Bytes()[1:])
	f.Add([]byte{0, 2, '{', '}'})
	f.Add([]byte{4, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bytes.NewReader(b)
		_, _ = readRefusal(r)
		if read := len(b) - r.Len(); read > 2+MaxRefusalBytes {
			t.Fatalf("read %d bytes", read)
		}
	})
}
