package transport

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Refusal is a server's refusal of a channel, as the dialer learns it. A server that
// refuses a CA-verified member for a reason it can name (the member is fenced: the
// cluster moved to a newer epoch) tells the dialer so, with the epoch it is at, instead
// of closing the connection silently: so a node learns that it was superseded from the
// first connection refused to it (DESIGN safety rule 3: every connection carries the
// epoch).
//
// On the wire, in place of the channel acknowledgement, the server sends the byte
// refusalMarker (0, never a channel), a 2-byte big-endian length of at most
// MaxRefusalBytes, and that many bytes of JSON, then closes. A dialer of the first
// release (1ca55cd) reads the marker as a bad acknowledgement and fails the dial, as it
// would on a silent close; this build reads the record.
//
// A Refusal matches ErrPeerRefused with errors.Is. The zero Refusal is a refusal the
// server did not explain (it closed the connection).
type Refusal struct {
	// ClusterID and Epoch are the refusing node's cluster and epoch (0 when unknown).
	ClusterID string `json:"cluster_id,omitempty"`
	Epoch     uint64 `json:"epoch,omitempty"`
	// Reason says why, for logs.
	Reason string `json:"reason,omitempty"`
}

// MaxRefusalBytes bounds the JSON of a refusal record.
const MaxRefusalBytes = 1024

// refusalMarker is the byte a server sends instead of the acknowledgement to refuse.
const refusalMarker = 0

// Error describes the refusal; the unexplained one reads as ErrPeerRefused.
func (r *Refusal) Error() string {
	switch {
	case r.Reason == "" && r.Epoch == 0:
		return ErrPeerRefused.Error()
	case r.Epoch == 0:
		return fmt.Sprintf("%s: %s", ErrPeerRefused, r.Reason)
	}
	return fmt.Sprintf("%s: %s (cluster %s is at epoch %d)", ErrPeerRefused, r.Reason, r.ClusterID, r.Epoch)
}

// Is makes a Refusal match ErrPeerRefused.
func (r *Refusal) Is(target error) bool { return target == ErrPeerRefused }

// writeRefusal sends r in place of the acknowledgement.
func writeRefusal(w io.Writer, r *Refusal) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if len(b) > MaxRefusalBytes {
		b, _ = json.Marshal(&Refusal{ClusterID: r.ClusterID, Epoch: r.Epoch})
	}
	msg := make([]byte, 3, 3+len(b))
	msg[0] = refusalMarker
	binary.BigEndian.PutUint16(msg[1:], uint16(len(b)))
	_, err = w.Write(append(msg, b...))
	return err
}

// readRefusal reads a refusal record after its marker byte.
func readRefusal(r io.Reader) (*Refusal, error) {
	var n [2]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return nil, err
	}
	size := int(binary.BigEndian.Uint16(n[:]))
	if size > MaxRefusalBytes {
		return nil, fmt.Errorf("refusal record of %d bytes, more than %d", size, MaxRefusalBytes)
	}
	b := make([]byte, size)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, err
	}
	var ref Refusal
	if err := json.Unmarshal(b, &ref); err != nil {
		return nil, fmt.Errorf("refusal record: %w", err)
	}
	return &ref, nil
}

// refusalOf returns the explained refusal err carries, if any.
func refusalOf(err error) *Refusal {
	var r *Refusal
	if errors.As(err, &r) && (r.Epoch != 0 || r.Reason != "") {
		return r
	}
	return nil
}

// noteRefused tells Config.Refused of a refusal by the server at addr.
func (m *Mux) noteRefused(addr string, err error) {
	if m.cfg.Refused == nil {
		return
	}
	var r *Refusal
	if errors.As(err, &r) {
		m.cfg.Refused(addr, *r)
	}
}
