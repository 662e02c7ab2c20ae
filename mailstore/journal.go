package mailstore

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"time"
)

// The intake journal's format (intake.go says how it is used).
//
// A segment file, journal/<n>.seg with n a 20-digit decimal, starts with the 8-byte
// magic "PMGJRNL1" and holds records one after the other, each:
//
//	len   uint32, big-endian: the payload's length
//	crc   uint32, big-endian: CRC-32C (Castagnoli) of the payload
//	payload:
//	  kind    byte: recInline (the body follows) or recSpooled (the body is the fsynced
//	          file tmp/<spooled>)
//	  at      int64, big-endian: the "new" event's time, Unix nanoseconds
//	  metaLen uint32, big-endian, then the message's Meta as JSON (ID, origin, seq set)
//	  nameLen uint16, big-endian, then the spooled name in tmp/ (memSpooledName, which
//	          no file has, for a recInline body received into memory)
//	  body    the rest: the message body (recInline only)
//
// A record is only ever appended whole and then fdatasynced with its group; a crash
// can leave a torn last group, which decodes as a short or mismatching record.

const journalMagic = "PMGJRNL1"

const (
	recInline  byte = 1
	recSpooled byte = 2
)

const (
	// maxInline is the largest body carried in the journal; a larger one is fsynced
	// in its own file and the record names it.
	maxInline = 256 << 10
	// maxJournalMeta bounds a record's metadata (addresses and a subject: far less).
	maxJournalMeta = 1 << 20
	// maxRecord bounds a record's payload when decoding.
	maxRecord = 1 + 8 + 4 + maxJournalMeta + 2 + 255 + maxInline
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// jrecord is one journal record.
type jrecord struct {
	kind    byte
	meta    Meta
	at      time.Time
	spooled string // base name in tmp/
	body    []byte // recInline only
}

// errTorn says a segment ends in a short or damaged record.
var errTorn = errors.New("damaged or incomplete record")

// appendRecord appends r's encoding to buf.
func appendRecord(buf []byte, r *jrecord) ([]byte, error) {
	meta, err := marshalMeta(&r.meta)
	if err != nil {
		return buf, err
	}
	if len(meta) > maxJournalMeta || len(r.spooled) > 255 || len(r.body) > maxInline {
		return buf, fmt.Errorf("%w: journal record too large", ErrInvalid)
	}
	n := 1 + 8 + 4 + len(meta) + 2 + len(r.spooled) + len(r.body)
	start := len(buf)
	buf = binary.BigEndian.AppendUint32(buf, uint32(n))
	buf = binary.BigEndian.AppendUint32(buf, 0) // crc, below
	buf = append(buf, r.kind)
	buf = binary.BigEndian.AppendUint64(buf, uint64(r.at.UnixNano()))
	buf = binary.BigEndian.AppendUint32(buf, uint32(len(meta)))
	buf = append(buf, meta...)
	buf = binary.BigEndian.AppendUint16(buf, uint16(len(r.spooled)))
	buf = append(buf, r.spooled...)
	buf = append(buf, r.body...)
	binary.BigEndian.PutUint32(buf[start+4:], crc32.Checksum(buf[start+8:], crcTable))
	return buf, nil
}

// decodePayload decodes one record's payload (its CRC already checked).
func decodePayload(p []byte) (*jrecord, error) {
	if len(p) < 1+8+4 {
		return nil, errTorn
	}
	r := &jrecord{kind: p[0]}
	if r.kind != recInline && r.kind != recSpooled {
		return nil, errTorn
	}
	r.at = time.Unix(0, int64(binary.BigEndian.Uint64(p[1:]))).UTC()
	ml := int(binary.BigEndian.Uint32(p[9:]))
	p = p[13:]
	if ml > maxJournalMeta || ml > len(p) {
		return nil, errTorn
	}
	if err := decodeMeta(p[:ml], &r.meta); err != nil {
		return nil, errTorn
	}
	p = p[ml:]
	if len(p) < 2 {
		return nil, errTorn
	}
	nl := int(binary.BigEndian.Uint16(p))
	p = p[2:]
	if nl > len(p) {
		return nil, errTorn
	}
	r.spooled = string(p[:nl])
	r.body = p[nl:]
	if len(r.body) > maxInline {
		return nil, errTorn
	}
	if r.kind == recSpooled && len(r.body) != 0 {
		return nil, errTorn
	}
	if _, _, err := ParseID(r.meta.ID); err != nil || MakeID(r.meta.Origin, r.meta.Seq) != r.meta.ID {
		return nil, errTorn
	}
	if !validSpooledName(r.spooled) {
		return nil, errTorn
	}
	if r.kind == recInline && int64(len(r.body)) != r.meta.Size {
		return nil, errTorn
	}
	return r, nil
}

// validSpooledName says whether name is a plain file name in tmp/.
func validSpooledName(name string) bool {
	if name == "" || name == "." || name == ".." || len(name) > 255 {
		return false
	}
	for i := 0; i < len(name); i++ {
		if name[i] == '/' || name[i] == 0 {
			return false
		}
	}
	return true
}

// readSegment decodes the records of one segment from r, calling fn for each in
// order. It returns errTorn (wrapped, with the offset) at the first short or damaged
// record; a segment without the magic is damaged at offset 0.
func readSegment(r io.Reader, fn func(*jrecord) error) error {
	br := bufio.NewReaderSize(r, 64<<10)
	magic := make([]byte, len(journalMagic))
	if _, err := io.ReadFull(br, magic); err != nil || string(magic) != journalMagic {
		return fmt.Errorf("offset 0: %w", errTorn)
	}
	off := int64(len(journalMagic))
	var head [8]byte
	var payload []byte
	for {
		if _, err := io.ReadFull(br, head[:]); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("offset %d: %w", off, errTorn)
		}
		n := binary.BigEndian.Uint32(head[:])
		if n > maxRecord {
			return fmt.Errorf("offset %d: %w", off, errTorn)
		}
		if cap(payload) < int(n) {
			payload = make([]byte, n)
		}
		payload = payload[:n]
		if _, err := io.ReadFull(br, payload); err != nil {
			return fmt.Errorf("offset %d: %w", off, errTorn)
		}
		if crc32.Checksum(payload, crcTable) != binary.BigEndian.Uint32(head[4:]) {
			return fmt.Errorf("offset %d: %w", off, errTorn)
		}
		rec, err := decodePayload(payload)
		if err != nil {
			return fmt.Errorf("offset %d: %w", off, err)
		}
		// The body aliases payload, reused for the next record: fn must not keep it.
		if err := fn(rec); err != nil {
			return err
		}
		off += 8 + int64(n)
	}
}
