package mailstore

import (
	"io"
	"sync"
	"sync/atomic"
)

// Bodies carried in the intake journal's records (intake.go), within a process-wide
// budget: all the bodies held in memory at once are bounded by maxInlineBytes.
//
// An Accept receives its body into memory while it fits (memBody): up to maxInline
// bytes, in a buffer of 64 KiB taken from the budget first and one of maxInline once
// the body outgrows it. The buffer is the body's record in the journal, and the index
// writes the body's final file from it (indexReq); it goes back to the budget once the
// message is indexed. A body that does not fit (larger than maxInline, or the budget is
// spent) goes to a spooled file in tmp/ from there on: its own fsync, and a record
// naming its file. So a flood of slow senders holds at most the budget; the messages
// beyond it take the file's way, and none is refused for it.

// maxInlineBytes bounds the bodies held for journal records at once, in the whole
// process (an SMTP flood of large messages waits on the disk, not on memory).
const maxInlineBytes = 16 << 20

var inlineBytes atomic.Int64

// inlinePools hold the buffers: one class up to 64 KiB, one up to maxInline.
var inlinePools = [2]sync.Pool{
	{New: func() any { b := make([]byte, 64<<10); return &b }},
	{New: func() any { b := make([]byte, maxInline); return &b }},
}

// inlineClassSize is the size of the buffers of each class.
var inlineClassSize = [2]int64{64 << 10, maxInline}

// inlineBuf is a buffer of class class, its size taken from the budget.
type inlineBuf struct {
	bp    *[]byte
	class int
}

// takeInline takes a buffer of class from the budget, or returns nil when the budget
// is spent.
func takeInline(class int) *inlineBuf {
	n := inlineClassSize[class]
	if inlineBytes.Add(n) > maxInlineBytes {
		inlineBytes.Add(-n)
		return nil
	}
	return &inlineBuf{bp: inlinePools[class].Get().(*[]byte), class: class}
}

// give puts the buffer back and returns its size to the budget.
func (b *inlineBuf) give() {
	inlinePools[b.class].Put(b.bp)
	inlineBytes.Add(-inlineClassSize[b.class])
}

// memBody is a body received into memory (the comment above).
type memBody struct {
	buf  *inlineBuf
	b    []byte // the body, or its start: (*buf.bp)[:len]
	tail []byte // read past a full buffer of maxInline: the bytes that follow b
}

// release gives the body's buffer back. It is idempotent.
func (m *memBody) release() {
	if m != nil && m.buf != nil {
		m.buf.give()
		m.buf, m.b = nil, nil
	}
}

// readInline reads r into memory, passing every byte to also, while the body fits.
// With ended set the whole body is in m.b; without it m.b and m.tail hold what was
// read so far (the caller writes them to a file and goes on from r), and m is nil
// when the budget did not allow even the first buffer. The caller releases m in every
// case.
func readInline(r io.Reader, also io.Writer) (m *memBody, ended bool, err error) {
	buf := takeInline(0)
	if buf == nil {
		return nil, false, nil
	}
	m = &memBody{buf: buf, b: (*buf.bp)[:0]}
	for {
		if len(m.b) == cap(m.b) {
			// Full: one more read tells whether the body ends here, before a larger
			// buffer is taken for it.
			var probe [512]byte
			k, rerr := readSome(r, probe[:])
			if rerr != nil && rerr != io.EOF {
				return m, false, rerr
			}
			if k == 0 {
				return m, true, nil
			}
			_, _ = also.Write(probe[:k])
			if m.buf.class == 0 && m.grow() {
				m.b = append(m.b, probe[:k]...)
				if rerr == io.EOF {
					return m, true, nil
				}
				continue
			}
			m.tail = append([]byte(nil), probe[:k]...)
			return m, false, nil
		}
		k, rerr := r.Read(m.b[len(m.b):cap(m.b)])
		_, _ = also.Write(m.b[len(m.b) : len(m.b)+k])
		m.b = m.b[:len(m.b)+k]
		if rerr == io.EOF {
			return m, true, nil
		}
		if rerr != nil {
			return m, false, rerr
		}
	}
}

// readSome reads into p until it gets a byte, the end or an error.
func readSome(r io.Reader, p []byte) (int, error) {
	for {
		k, err := r.Read(p)
		if k > 0 || err != nil {
			return k, err
		}
	}
}

// grow moves the body into a buffer of maxInline, when the budget allows.
func (m *memBody) grow() bool {
	nb := takeInline(1)
	if nb == nil {
		return false
	}
	b := append((*nb.bp)[:0], m.b...)
	m.buf.give()
	m.buf, m.b = nb, b
	return true
}
