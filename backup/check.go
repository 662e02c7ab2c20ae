package backup

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/fsm"
)

// content checks what a backup holds, record by record, by the rules a restore applies:
// a file whose checksum is valid but whose content a restore would refuse half-way is
// refused whole, before anything is replaced. Its memory is bounded by fsm.MaxStateBytes
// (the keys seen, to find a key twice; a larger configuration is refused).
type content struct {
	withMail bool
	keys     map[string]struct{}
	bytes    int64 // sum of len(key)+len(value), as fsm counts the store
	msg      *api.QuarantineMessage
	body     hash.Hash // the SHA-256 of the body being read, when msg has one
}

func newContent(h Header) *content {
	return &content{withMail: h.WithMail, keys: map[string]struct{}{}}
}

// entry checks configuration entry number n (from 1).
func (c *content) entry(n int, e *Entry) error {
	if err := fsm.ValidateKey(e.Key); err != nil {
		return fmt.Errorf("%w: entry %d: %w", ErrInvalid, n, err)
	}
	if len(e.Value) > fsm.MaxValueLen {
		return fmt.Errorf("%w: entry %d (key %q): the value is %d bytes, the limit is %d: %w",
			ErrInvalid, n, e.Key, len(e.Value), fsm.MaxValueLen, fsm.ErrTooLarge)
	}
	if _, ok := c.keys[e.Key]; ok {
		return fmt.Errorf("%w: entry %d: key %q appears twice", ErrInvalid, n, e.Key)
	}
	c.bytes += int64(len(e.Key) + len(e.Value))
	if c.bytes > fsm.MaxStateBytes {
		return fmt.Errorf("%w: the entries hold over %d bytes, the limit of the configuration store: %w",
			ErrInvalid, fsm.MaxStateBytes, fsm.ErrTooLarge)
	}
	c.keys[e.Key] = struct{}{}
	return nil
}

// mail checks the metadata of message number n (from 1) and starts the check of its
// body, which bodyDone finishes.
func (c *content) mail(n int, m *Mail) (*api.QuarantineMessage, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: message %d: %s", ErrInvalid, n, fmt.Sprintf(format, args...))
	}
	if !c.withMail {
		return nil, bad("the header says the backup holds no mail")
	}
	if m.Size < 0 {
		return nil, bad("negative size %d", m.Size)
	}
	meta := bytes.TrimSpace(m.Meta)
	if len(meta) == 0 || meta[0] != '{' {
		return nil, bad("the metadata is not a JSON object")
	}
	var q api.QuarantineMessage
	if err := json.Unmarshal(meta, &q); err != nil {
		return nil, bad("metadata: %v", err)
	}
	switch q.State {
	case "", api.MailQuarantined, api.MailReleased:
	default:
		return nil, bad("(%s) state %q: a backup holds quarantined or released messages only", q.ID, q.State)
	}
	c.msg, c.body = &q, nil
	// Every backup pmgcm writes carries the body's SHA-256 (and then its size): check
	// both. Without one (a file made by hand), only the checksum of the file holds.
	if q.SHA256 != "" {
		if b, err := hex.DecodeString(q.SHA256); err != nil || len(b) != sha256.Size || hex.EncodeToString(b) != q.SHA256 {
			return nil, bad("(%s) sha256 %q is not a SHA-256 in lower-case hex", q.ID, q.SHA256)
		}
		if q.Size != m.Size {
			return nil, bad("(%s) its metadata says %d bytes, its body is %d", q.ID, q.Size, m.Size)
		}
		c.body = sha256.New()
	}
	return &q, nil
}

// bodyWriter returns where the body of the current message is hashed, nil for nowhere.
func (c *content) bodyWriter() hash.Hash { return c.body }

// bodyDone checks the body of the current message, read whole into bodyWriter.
func (c *content) bodyDone() error {
	msg, h := c.msg, c.body
	c.msg, c.body = nil, nil
	if msg == nil || h == nil {
		return nil
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != msg.SHA256 {
		return fmt.Errorf("%w: message %s: its body's SHA-256 is %s, its metadata says %s", ErrInvalid, msg.ID, got, msg.SHA256)
	}
	return nil
}
