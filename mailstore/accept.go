package mailstore

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"mime"
	"net/mail"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// maxHeader bounds how much of a message is kept in memory to find its Subject.
const maxHeader = 64 << 10

// Accept stores a message received by SMTP on this node: it receives r into memory
// within a process-wide budget, or streams it to a file beyond that (inline.go),
// computing its size and SHA-256, and appends its record to the intake journal
// (intake.go), which is fdatasynced with the group of Accepts of the
// moment. When Accept returns without error the message is durable and the caller
// may answer 250; every later read of the store sees it.
func (s *Store) Accept(from string, to []string, r io.Reader) (Meta, error) {
	return s.accept(from, to, r, time.Time{})
}

// Import stores a message restored from a backup as Accept does, but keeps the time it
// was first received: retention (Purge) then counts from that time, as it would have
// without the restore. The message still gets this node's origin and a new ID: IDs are
// per origin, and the CIDs of the cluster it came from are handed out again. A zero
// received time means now.
func (s *Store) Import(from string, to []string, received time.Time, r io.Reader) (Meta, error) {
	return s.accept(from, to, r, received)
}

// accept stores a message; received is the time it was received, zero for now.
func (s *Store) accept(from string, to []string, r io.Reader, received time.Time) (Meta, error) {
	// The content generation is read before the spooled file is made: a Wipe or a
	// restore's swap bumps it when it starts and again once tmp/ is replaced, both
	// under s.mu, so a file made in a tmp/ that was replaced since carries an older
	// generation, which the journal refuses (intake.go).
	s.mu.RLock()
	closed := s.closed
	gen := s.spoolGen()
	s.mu.RUnlock()
	if closed {
		return Meta{}, ErrClosed
	}
	h := sha256.New()
	head := &prefixBuffer{max: maxHeader}
	also := io.MultiWriter(h, head)
	mem, ended, err := readInline(r, also)
	if err != nil {
		mem.release()
		return Meta{}, fmt.Errorf("mailstore: accept: %w", err)
	}
	if ended {
		return s.acceptMem(from, to, received, gen, mem, h, head)
	}
	f, err := os.CreateTemp(filepath.Join(s.dir, "tmp"), "accept-*")
	if err != nil {
		mem.release()
		return Meta{}, fmt.Errorf("mailstore: accept: %w", err)
	}
	tmp := f.Name()
	var n int64
	if mem != nil {
		// What memory took first goes to the file ahead of the rest.
		_, err = f.Write(mem.b)
		if err == nil {
			_, err = f.Write(mem.tail)
		}
		n = int64(len(mem.b) + len(mem.tail))
		mem.release()
	}
	if err == nil {
		buf := copyBufs.Get().(*[]byte)
		var k int64
		k, err = io.CopyBuffer(io.MultiWriter(f, also), r, *buf)
		copyBufs.Put(buf)
		n += k
	}
	if err != nil {
		_ = f.Close()
		_ = os.Remove(tmp)
		return Meta{}, fmt.Errorf("mailstore: accept: %w", err)
	}
	now, received := s.stamp(received)
	// Too large for memory (or the budget of bodies held in memory is spent): the
	// body's own fsync makes it durable, and the record names its file. It runs
	// while the message waits for its group.
	synced := make(chan error, 1)
	go func() { synced <- f.Sync() }()
	var syncErr error
	waited := false
	req := &intakeReq{
		rec: jrecord{
			kind:    recSpooled,
			meta:    newMeta(from, to, received, n, h, head),
			at:      now,
			spooled: filepath.Base(tmp),
		},
		gen: gen,
		tmp: tmp,
		ready: func() error {
			if !waited {
				syncErr, waited = <-synced, true
			}
			return syncErr
		},
	}
	defer func() { _ = req.ready() }()
	// The record, naming the synced file, is durable in the intake journal when
	// appendIntake returns; the index and the final name
	// follow in the background, before any read sees the store (intake.go).
	err = s.appendIntake(req)
	_ = f.Close() // the body was fsynced: a close error does not undo it
	if err != nil {
		// With the journal stopped the record may be on disk: a spooled body stays
		// for Open's replay (which then keeps the message, unacknowledged: the
		// client's retry makes it a duplicate, never a loss).
		if !errors.Is(err, errBroken) {
			_ = os.Remove(tmp)
		}
		return Meta{}, fmt.Errorf("mailstore: accept: %w", err)
	}
	return req.rec.meta, nil
}

// acceptMem stores a message whose whole body was received into memory: its record
// in the journal carries the body, and the index writes its final file from mem,
// which it releases once the message is indexed (intake.go).
func (s *Store) acceptMem(from string, to []string, received time.Time, gen uint64, mem *memBody,
	h hash.Hash, head *prefixBuffer) (Meta, error) {
	now, received := s.stamp(received)
	req := &intakeReq{
		rec: jrecord{
			kind:    recInline,
			meta:    newMeta(from, to, received, int64(len(mem.b)), h, head),
			at:      now,
			spooled: memSpooledName,
			body:    mem.b,
		},
		gen: gen,
		mem: mem,
	}
	if err := s.appendIntake(req); err != nil {
		// Not handed to the index: nothing else holds mem. With the journal stopped
		// the record may be on disk; Open's replay writes the body from it.
		mem.release()
		return Meta{}, fmt.Errorf("mailstore: accept: %w", err)
	}
	return req.rec.meta, nil
}

// memSpooledName is the spooled name in the record of a body received into memory: no
// file has it (spooled files are "accept-*"). The name of an inline record is never
// opened (a replay writes the body from the record), and every build with the journal
// requires one, so such records read the same in the builds before this one.
const memSpooledName = "in-memory"

// stamp returns the time of a message's "new" event, now, and the time it was received:
// received, or now when that is zero (an SMTP intake rather than an import).
func (s *Store) stamp(received time.Time) (now, at time.Time) {
	now = s.opts.Now().UTC()
	if received.IsZero() {
		return now, now
	}
	return now, received
}

// newMeta is the metadata of a message just received: n bytes hashed by h, whose
// header head kept.
func newMeta(from string, to []string, received time.Time, n int64, h hash.Hash, head *prefixBuffer) Meta {
	return Meta{
		From:     from,
		To:       append([]string(nil), to...),
		Subject:  parseSubject(head.Bytes()),
		Size:     n,
		SHA256:   hex.EncodeToString(h.Sum(nil)),
		State:    StateQuarantined,
		Received: received.UTC(),
	}
}

// wireMeta is the copy of m that travels in an event: no local fields.
func wireMeta(m Meta) *Meta {
	m.HaveBody = false
	m.State = StateQuarantined
	m.To = append([]string(nil), m.To...)
	return &m
}

// copyBufs are the buffers Accept copies a message through (io.Copy would
// allocate 32 KiB per message).
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// prefixBuffer keeps the first max bytes written to it, up to the end of the
// header (the first empty line) when it sees one, and discards the rest: only
// the header is parsed (parseSubject), so the body is not copied.
type prefixBuffer struct {
	bytes.Buffer
	max  int
	done bool // the end of the header is in the buffer
}

func (p *prefixBuffer) Write(b []byte) (int, error) {
	if p.done {
		return len(b), nil
	}
	if room := p.max - p.Len(); room > 0 {
		chunk := b[:min(room, len(b))]
		// An empty line may straddle two writes: look at the last 3 bytes kept
		// and the first 3 new ones, then at the new ones.
		var w [6]byte
		k := copy(w[:], p.Bytes()[max(0, p.Len()-3):])
		j := copy(w[k:], chunk)
		if e := headerEnd(w[:k+j]); e > k {
			chunk, p.done = chunk[:e-k], true
		} else if e := headerEnd(chunk); e >= 0 {
			chunk, p.done = chunk[:e], true
		}
		p.Buffer.Write(chunk)
	}
	return len(b), nil
}

// headerEnd returns the index just past the first empty line ("\r\n\r\n" or
// "\n\n") in b, -1 when there is none.
func headerEnd(b []byte) int {
	e := -1
	if i := bytes.Index(b, []byte("\r\n\r\n")); i >= 0 {
		e = i + 4
	}
	if i := bytes.Index(b, []byte("\n\n")); i >= 0 && (e < 0 || i+2 < e) {
		e = i + 2
	}
	return e
}

// parseSubject returns the decoded Subject header of a message whose start is
// head, best effort: "" when there is none or the header cannot be read.
func parseSubject(head []byte) string {
	if i := bytes.Index(head, []byte("\r\n\r\n")); i >= 0 {
		head = head[:i+2]
	} else if i := bytes.Index(head, []byte("\n\n")); i >= 0 {
		head = head[:i+1]
	} else if i := bytes.LastIndexByte(head, '\n'); i >= 0 {
		head = head[:i+1] // truncated header: keep whole lines only
	}
	var raw string
	if msg, err := mail.ReadMessage(bytes.NewReader(append(append([]byte(nil), head...), "\r\n"...))); err == nil {
		raw = msg.Header.Get("Subject")
	} else {
		raw = scanSubject(head)
	}
	dec := new(mime.WordDecoder)
	if s, err := dec.DecodeHeader(raw); err == nil {
		return s
	}
	return raw
}

// scanSubject finds a Subject line (with continuation lines) in a header that
// net/mail refused.
func scanSubject(head []byte) string {
	sc := bufio.NewScanner(bytes.NewReader(head))
	sc.Buffer(make([]byte, 0, 4096), maxHeader)
	var out []string
	in := false
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		switch {
		case in && (strings.HasPrefix(line, " ") || strings.HasPrefix(line, "\t")):
			out = append(out, strings.TrimSpace(line))
		case in:
			return strings.Join(out, " ")
		case len(line) >= 8 && strings.EqualFold(line[:8], "subject:"):
			in = true
			out = append(out, strings.TrimSpace(line[8:]))
		}
	}
	return strings.Join(out, " ")
}
