// Package backup owns the pmgcm backup file format: a consistent copy of a cluster's
// configuration entries and, optionally, its quarantined mail, with a checksum.
//
// The format is a stream, so that large stores are never held in memory:
//
//	{"kind":"pmgcm-backup","format":1,...}           the header, one JSON line
//	{"entry":{"key":...,"value":...,"version":N}}    one line per configuration entry
//	{"mail":{"meta":{...},"size":N}}                 one line per message, followed by
//	<N raw bytes>\n                                   its body and a newline
//	{"trailer":{"sha256":...,"entries":N,"mail":M}}  the last line
//
// The SHA-256 covers every byte before the trailer line, so a truncated or altered file
// never validates. The Reader also checks the content by the rules a restore applies
// (every key and value as fsm checks them, no key twice, every message's metadata and
// the SHA-256 of its body): a file with a valid checksum but content a restore would
// refuse half-way is refused whole, with ErrInvalid, before anything is replaced.
//
// Size bounds: a JSON line is at most maxLine (4 MiB) bytes; the entries at most
// fsm.MaxStateBytes in all; mail bodies are streamed, never held in memory. Cluster identity, members and certificates are never part of a
// backup (the manual: "Cluster and node information is not restored").
//
// It imports only fsm (the key and value rules) and api (the message metadata), which
// import nothing of the project's, so that both the daemon (which writes and restores
// backups) and the CLI (which inspects them) check a file by the same rules. It must
// never import the daemon or the CLI.
package backup

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"time"

	"github.com/pmgcm/pmgcm/api"
)

// Kind marks a pmgcm backup in its header.
const Kind = "pmgcm-backup"

// Format is the version of the format this package writes and the newest it reads.
const Format = 1

// maxLine bounds one JSON line: an entry holds at most a 1 MiB value, base64-encoded.
const maxLine = 4 << 20

// Sentinel errors. ErrCorrupt, ErrTruncated and ErrInvalid mean the file must not be
// restored.
var (
	ErrNotBackup = errors.New("not a pmgcm backup")
	ErrNewer     = errors.New("backup format is newer than this pmgcm reads")
	ErrCorrupt   = errors.New("backup is corrupt")
	ErrTruncated = errors.New("backup is truncated")
	// ErrInvalid means the checksum holds but the content breaks a rule of restore (an
	// invalid key, a value too large, a key twice, bad message metadata, a body that
	// does not match its SHA-256): the file was not written by pmgcm, or was altered.
	ErrInvalid = errors.New("backup content is invalid")
)

// Header describes a backup.
type Header struct {
	Kind      string `json:"kind"`
	Format    int    `json:"format"`
	ClusterID string `json:"cluster_id"`
	// Index is the Raft index every entry of the backup is at.
	Index   uint64    `json:"index"`
	Created time.Time `json:"created"`
	Entries int       `json:"entries"`
	// WithMail is true when the backup holds the quarantine; Mail counts its messages.
	WithMail bool `json:"with_mail"`
	Mail     int  `json:"mail"`
}

// Entry is one configuration entry.
type Entry struct {
	Key     string `json:"key"`
	Value   []byte `json:"value"`
	Version uint64 `json:"version"`
}

// Mail is one message: its metadata (the mail store's own JSON) and its body.
type Mail struct {
	Meta json.RawMessage `json:"meta"`
	Size int64           `json:"size"`
}

type record struct {
	Entry   *Entry   `json:"entry,omitempty"`
	Mail    *Mail    `json:"mail,omitempty"`
	Trailer *trailer `json:"trailer,omitempty"`
}

type trailer struct {
	SHA256  string `json:"sha256"`
	Entries int    `json:"entries"`
	Mail    int    `json:"mail"`
}

// Writer writes a backup.
type Writer struct {
	w       *bufio.Writer
	h       hash.Hash
	entries int
	mail    int
	err     error
}

// NewWriter writes the header of a backup to w. h.Kind and h.Format are filled in.
func NewWriter(w io.Writer, h Header) (*Writer, error) {
	h.Kind, h.Format = Kind, Format
	bw := &Writer{w: bufio.NewWriterSize(w, 256<<10), h: sha256.New()}
	bw.line(h)
	return bw, bw.err
}

func (w *Writer) write(b []byte) {
	if w.err != nil {
		return
	}
	w.h.Write(b)
	_, w.err = w.w.Write(b)
}

func (w *Writer) line(v any) {
	b, err := json.Marshal(v)
	if err != nil && w.err == nil {
		w.err = err
	}
	w.write(append(b, '\n'))
}

// WriteEntry adds a configuration entry.
func (w *Writer) WriteEntry(e Entry) error {
	w.line(record{Entry: &e})
	w.entries++
	return w.err
}

// WriteMail adds a message with its metadata and body of size bytes, streamed from r.
func (w *Writer) WriteMail(meta json.RawMessage, size int64, r io.Reader) error {
	w.line(record{Mail: &Mail{Meta: meta, Size: size}})
	if w.err != nil {
		return w.err
	}
	n, err := io.Copy(io.MultiWriter(w.h, w.w), io.LimitReader(r, size))
	if err == nil && n != size {
		err = fmt.Errorf("mail body is %d bytes, its metadata says %d", n, size)
	}
	if err != nil {
		w.err = err
		return err
	}
	w.write([]byte{'\n'})
	w.mail++
	return w.err
}

// Close writes the trailer and flushes. It does not close the underlying writer.
func (w *Writer) Close() error {
	sum := hex.EncodeToString(w.h.Sum(nil))
	if w.err == nil {
		b, _ := json.Marshal(record{Trailer: &trailer{SHA256: sum, Entries: w.entries, Mail: w.mail}})
		_, w.err = w.w.Write(append(b, '\n'))
	}
	if w.err == nil {
		w.err = w.w.Flush()
	}
	return w.err
}

// Reader reads a backup, checking it as it goes: Next returns io.EOF only after a
// trailer whose checksum and counts match.
type Reader struct {
	r       *bufio.Reader
	h       hash.Hash
	header  Header
	entries int
	mail    int
	body    *io.LimitedReader
	done    bool
	check   *content
}

// NewReader reads and checks the header.
func NewReader(r io.Reader) (*Reader, error) {
	br := &Reader{r: bufio.NewReaderSize(r, 256<<10), h: sha256.New()}
	line, err := br.readLine()
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, ErrTruncated) {
			return nil, fmt.Errorf("%w: empty file", ErrNotBackup)
		}
		return nil, err
	}
	if err := json.Unmarshal(line, &br.header); err != nil || br.header.Kind != Kind {
		return nil, fmt.Errorf("%w: no backup header", ErrNotBackup)
	}
	br.h.Write(line)
	if br.header.Format > Format || br.header.Format < 1 {
		return nil, fmt.Errorf("%w: the file is format %d, this pmgcm reads format %d: restore it with a newer pmgcm",
			ErrNewer, br.header.Format, Format)
	}
	br.check = newContent(br.header)
	return br, nil
}

// Header returns the backup's header.
func (r *Reader) Header() Header { return r.header }

// readLine reads one line, hashing it; a missing newline means the file was cut.
func (r *Reader) readLine() ([]byte, error) {
	line, err := r.r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		buf := append([]byte(nil), line...)
		for errors.Is(err, bufio.ErrBufferFull) && len(buf) < maxLine {
			line, err = r.r.ReadSlice('\n')
			buf = append(buf, line...)
		}
		line = buf
	}
	switch {
	case err == nil:
	case errors.Is(err, io.EOF) && len(line) == 0:
		return nil, io.EOF
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return nil, fmt.Errorf("%w: the last line is cut off", ErrTruncated)
	case errors.Is(err, bufio.ErrBufferFull):
		return nil, fmt.Errorf("%w: a line over %d bytes", ErrCorrupt, maxLine)
	default:
		return nil, err
	}
	return line, nil
}

// Record is one item of a backup: an entry, or a message whose Body must be read (or
// left) before the next call to Next. Message is the message's metadata, checked.
type Record struct {
	Entry   *Entry
	Mail    *Mail
	Message *api.QuarantineMessage
	Body    io.Reader
}

// Next returns the next record, or io.EOF after a valid trailer. A body that does not
// match the SHA-256 of its metadata is reported (ErrInvalid) by the Next after it: a
// caller that imports a message as it reads it must treat the import as provisional
// until then.
func (r *Reader) Next() (Record, error) {
	if r.done {
		return Record{}, io.EOF
	}
	if r.body != nil {
		if _, err := io.Copy(io.Discard, r.body); err != nil {
			return Record{}, r.cut(err)
		}
		if r.body.N > 0 {
			return Record{}, fmt.Errorf("%w: a mail body is cut off", ErrTruncated)
		}
		nl, err := r.r.ReadByte()
		if err != nil {
			return Record{}, r.cut(err)
		}
		if nl != '\n' {
			return Record{}, fmt.Errorf("%w: no newline after a mail body", ErrCorrupt)
		}
		r.h.Write([]byte{nl})
		r.body = nil
		if err := r.check.bodyDone(); err != nil {
			return Record{}, err
		}
	}
	sum := r.h.Sum(nil)
	line, err := r.readLine()
	if errors.Is(err, io.EOF) {
		return Record{}, fmt.Errorf("%w: no trailer", ErrTruncated)
	}
	if err != nil {
		return Record{}, err
	}
	var rec record
	if err := json.Unmarshal(line, &rec); err != nil {
		return Record{}, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	switch {
	case rec.Trailer != nil:
		t := rec.Trailer
		if t.SHA256 != hex.EncodeToString(sum) {
			return Record{}, fmt.Errorf("%w: checksum mismatch", ErrCorrupt)
		}
		if t.Entries != r.entries || t.Mail != r.mail || t.Entries != r.header.Entries || t.Mail != r.header.Mail {
			return Record{}, fmt.Errorf("%w: %d entries and %d messages, the header says %d and %d",
				ErrCorrupt, r.entries, r.mail, r.header.Entries, r.header.Mail)
		}
		if _, err := r.r.ReadByte(); !errors.Is(err, io.EOF) {
			return Record{}, fmt.Errorf("%w: data after the trailer", ErrCorrupt)
		}
		r.done = true
		return Record{}, io.EOF
	case rec.Entry != nil:
		r.h.Write(line)
		r.entries++
		if err := r.check.entry(r.entries, rec.Entry); err != nil {
			return Record{}, err
		}
		return Record{Entry: rec.Entry}, nil
	case rec.Mail != nil:
		r.h.Write(line)
		if rec.Mail.Size < 0 {
			return Record{}, fmt.Errorf("%w: negative mail size", ErrCorrupt)
		}
		r.mail++
		msg, err := r.check.mail(r.mail, rec.Mail)
		if err != nil {
			return Record{}, err
		}
		var sink io.Writer = r.h
		if bh := r.check.bodyWriter(); bh != nil {
			sink = io.MultiWriter(r.h, bh)
		}
		r.body = &io.LimitedReader{R: io.TeeReader(r.r, sink), N: rec.Mail.Size}
		return Record{Mail: rec.Mail, Message: msg, Body: r.body}, nil
	}
	return Record{}, fmt.Errorf("%w: unknown record", ErrCorrupt)
}

func (r *Reader) cut(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: a mail body is cut off", ErrTruncated)
	}
	return err
}

// Verify reads a whole backup and returns its header if it is valid.
func Verify(r io.Reader) (Header, error) {
	br, err := NewReader(r)
	if err != nil {
		return Header{}, err
	}
	for {
		if _, err := br.Next(); errors.Is(err, io.EOF) {
			return br.Header(), nil
		} else if err != nil {
			return br.Header(), err
		}
	}
}
