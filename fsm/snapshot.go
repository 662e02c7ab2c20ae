package fsm

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"

	"github.com/hashicorp/raft"
)

// SnapshotFormat is the snapshot format this node writes. It reads formats
// minSnapshotFormat to SnapshotFormat.
//
// A snapshot is newline-delimited JSON:
//
//	{"format":2,"applied_index":N,"horizon":H}       header
//	{"cluster":{...}}                                 at most one
//	{"member":{...}}                                  one per member, by CID
//	{"entry":{"key":...,"value":...,"version":...}}   one per entry, by key
//	{"tombstone":{"key":...,"version":...}}           one per tombstone, by version
//	{"trailer":{"cluster":true,"members":M,"entries":E,"tombstones":T,"sha256":"..."}}
//
// The trailer's sha256 covers every byte before the trailer line. Nothing
// may follow the trailer.
//
// Format 1 (before tombstones) is format 2 without the horizon, the
// tombstone records and the trailer's tombstone count: it restores with no
// tombstones and horizon 0. Format 2 got a new number although it only adds
// to format 1 so that a node that knows only format 1 refuses it with a
// clear "upgrade" error rather than an unknown-field one.
const SnapshotFormat = 2

// minSnapshotFormat is the oldest snapshot format this node reads.
const minSnapshotFormat = 1

// maxSnapshotLine bounds one snapshot line: a MaxValueLen value in base64
// (4/3 of it) plus the key and JSON framing, with room to spare. Apply bounds
// every other record well below it. The state a snapshot restores is bounded
// as Apply bounds it: entries and tombstones at most MaxStateBytes (a snapshot
// over it is refused), so Restore's memory is too.
const maxSnapshotLine = 2 << 20

type snapHeader struct {
	Format       int    `json:"format"`
	AppliedIndex uint64 `json:"applied_index"`
	// Horizon is the tombstone horizon (format 2 on).
	Horizon uint64 `json:"horizon"`
}

type snapTrailer struct {
	Cluster bool `json:"cluster"`
	Members int  `json:"members"`
	Entries int  `json:"entries"`
	// Tombstones counts the tombstone records (format 2 on).
	Tombstones int    `json:"tombstones"`
	SHA256     string `json:"sha256"`
}

// snapRecord is one line after the header; exactly one field is set.
type snapRecord struct {
	Cluster   *Cluster     `json:"cluster,omitempty"`
	Member    *Member      `json:"member,omitempty"`
	Entry     *Entry       `json:"entry,omitempty"`
	Tombstone *tombstone   `json:"tombstone,omitempty"`
	Trailer   *snapTrailer `json:"trailer,omitempty"`
}

func (r snapRecord) fields() int {
	n := 0
	for _, set := range []bool{r.Cluster != nil, r.Member != nil, r.Entry != nil, r.Tombstone != nil, r.Trailer != nil} {
		if set {
			n++
		}
	}
	return n
}

// fsmSnapshot is a point-in-time copy of the state; it implements
// raft.FSMSnapshot.
type fsmSnapshot struct {
	st      state
	applied uint64
	// faults is the FSM's record of failed reads, and mark its count when the snapshot
	// was taken: a written snapshot ends a fault that no later read renewed.
	faults *readFaults
	mark   uint64
}

// Snapshot returns a point-in-time snapshot of the state. It only copies the
// maps; serialization happens in Persist, concurrently with Apply.
//
// A halted FSM (see ErrHalted) refuses: its state is not that of its applied index's
// successors, and Raft must keep the log entries it could not apply.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.halted != nil {
		return nil, fmt.Errorf("snapshot: %w", f.halted)
	}
	faults := f.readFaults()
	return &fsmSnapshot{st: f.st.clone(), applied: f.applied, faults: faults, mark: faults.mark()}, nil
}

// Persist writes the snapshot to sink in SnapshotFormat, then closes the
// sink, or cancels it on error.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := s.write(sink); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("persist snapshot at index %d: %w", s.applied, err)
	}
	if err := sink.Close(); err != nil {
		return err
	}
	s.faults.snapshotRead(s.mark) // every value of the snapshot was read
	return nil
}

// Release implements raft.FSMSnapshot: it lets go of the spilled values.
func (s *fsmSnapshot) Release() {
	s.st.seg.unpin()
	s.st.seg = nil
}

func (s *fsmSnapshot) write(w io.Writer) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	h := sha256.New()
	enc := json.NewEncoder(io.MultiWriter(bw, h)) // one value per line
	enc.SetEscapeHTML(false)

	if err := enc.Encode(snapHeader{Format: SnapshotFormat, AppliedIndex: s.applied, Horizon: s.st.tombs.horizon}); err != nil {
		return err
	}
	tr := snapTrailer{Cluster: s.st.cluster != nil}
	if s.st.cluster != nil {
		if err := enc.Encode(snapRecord{Cluster: s.st.cluster}); err != nil {
			return err
		}
	}
	for _, m := range s.st.sortedMembers() {
		if err := enc.Encode(snapRecord{Member: &m}); err != nil {
			return err
		}
		tr.Members++
	}
	entries := s.st.view("")
	defer entries.Close()
	for i := range entries.Len() {
		e, err := entries.At(i)
		if err != nil {
			return err
		}
		if err := enc.Encode(snapRecord{Entry: &e}); err != nil {
			return err
		}
		tr.Entries++
	}
	for _, tb := range s.st.tombs.sorted() {
		if err := enc.Encode(snapRecord{Tombstone: &tb}); err != nil {
			return err
		}
		tr.Tombstones++
	}
	tr.SHA256 = hex.EncodeToString(h.Sum(nil))
	tail := json.NewEncoder(bw) // the trailer is not part of the digest
	if err := tail.Encode(snapRecord{Trailer: &tr}); err != nil {
		return err
	}
	return bw.Flush()
}

// Restore replaces the whole state with the snapshot read from rc, and sets
// AppliedIndex to the snapshot's index. On any error (I/O, truncation,
// corruption, unknown format: wrapping ErrBadSnapshot) the FSM is left
// unchanged. It closes rc.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	st, applied, err := readSnapshot(bufio.NewReaderSize(rc, 64<<10), f.sp)
	if err != nil {
		return fmt.Errorf("restore snapshot: %w", err)
	}
	f.mu.Lock()
	old := f.st.seg
	f.st = st
	f.pending = st.seg
	f.applied = applied
	f.halted = nil // the snapshot holds what this node could not apply
	f.serveHashesLocked(applied, true, true)
	hook := f.onApply
	f.mu.Unlock()
	old.unpin()
	if hook != nil {
		hook(applied)
	}
	return nil
}

// snapReader reads and hashes the lines of a snapshot.
type snapReader struct {
	r    *bufio.Reader
	h    hash.Hash
	line int
}

// next returns the next line (without its newline). A missing final newline
// is truncation.
func (sr *snapReader) next() ([]byte, error) {
	var line []byte
	for {
		frag, err := sr.r.ReadSlice('\n')
		if len(line)+len(frag) > maxSnapshotLine {
			return nil, fmt.Errorf("%w: line %d is longer than %d bytes", ErrBadSnapshot, sr.line+1, maxSnapshotLine)
		}
		line = append(line, frag...)
		switch {
		case err == nil:
			sr.line++
			return line[:len(line)-1], nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF):
			if len(line) == 0 {
				return nil, io.EOF
			}
			return nil, fmt.Errorf("%w: truncated: line %d has no end", ErrBadSnapshot, sr.line+1)
		default:
			return nil, err
		}
	}
}

// strictUnmarshal decodes exactly one JSON value with no unknown fields.
func strictUnmarshal(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("trailing data")
	}
	return nil
}

func readSnapshot(r *bufio.Reader, sp *spiller) (state, uint64, error) {
	rs := &restoring{st: newState(), sp: sp}
	applied, err := rs.read(r)
	if err != nil {
		rs.st.seg.unpin()
		return state{}, 0, err
	}
	return rs.st, applied, nil
}

// read reads the snapshot into rs.st and returns its applied index.
func (rs *restoring) read(r *bufio.Reader) (uint64, error) {
	sr := &snapReader{r: r, h: sha256.New()}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: line %d: %s", ErrBadSnapshot, sr.line, fmt.Sprintf(format, args...))
	}

	line, err := sr.next()
	if errors.Is(err, io.EOF) {
		return 0, fmt.Errorf("%w: empty", ErrBadSnapshot)
	} else if err != nil {
		return 0, err
	}
	var ver struct {
		Format int `json:"format"`
	}
	if err := json.Unmarshal(line, &ver); err != nil {
		return 0, bad("bad header: %v", err)
	}
	if ver.Format < minSnapshotFormat || ver.Format > SnapshotFormat {
		return 0, fmt.Errorf("%w: snapshot format %d unknown to this node (it reads formats %d-%d): upgrade pmgclusterd",
			ErrBadSnapshot, ver.Format, minSnapshotFormat, SnapshotFormat)
	}
	var hdr snapHeader
	if err := strictUnmarshal(line, &hdr); err != nil {
		return 0, bad("bad header: %v", err)
	}
	if hdr.Format < 2 && hdr.Horizon != 0 {
		return 0, bad("tombstone horizon in a format %d snapshot", hdr.Format)
	}
	sr.h.Write(line)
	sr.h.Write([]byte{'\n'})

	rs.hdr = hdr
	rs.st.tombs.horizon = hdr.Horizon
	st, got := &rs.st, &rs.got
	for {
		line, err := sr.next()
		if errors.Is(err, io.EOF) {
			return 0, fmt.Errorf("%w: truncated after line %d: no trailer", ErrBadSnapshot, sr.line)
		} else if err != nil {
			return 0, err
		}
		var rec snapRecord
		if err := strictUnmarshal(line, &rec); err != nil {
			return 0, bad("%v", err)
		}
		if rec.fields() != 1 {
			return 0, bad("record has %d kinds, want 1", rec.fields())
		}
		if rec.Trailer != nil {
			got.SHA256 = hex.EncodeToString(sr.h.Sum(nil))
			if *rec.Trailer != *got {
				return 0, bad("trailer %+v does not match the content %+v", *rec.Trailer, *got)
			}
			break
		}
		sr.h.Write(line)
		sr.h.Write([]byte{'\n'})
		if err := rs.record(rec); err != nil {
			return 0, bad("%v", err)
		}
	}
	if _, err := sr.next(); !errors.Is(err, io.EOF) {
		return 0, fmt.Errorf("%w: data after the trailer", ErrBadSnapshot)
	}
	if len(st.members) > 0 && st.cluster == nil {
		return 0, fmt.Errorf("%w: members without a cluster", ErrBadSnapshot)
	}
	return hdr.AppliedIndex, nil
}

// restoring is a state being rebuilt from snapshot records.
type restoring struct {
	st  state
	sp  *spiller // where the values go (nil: the heap)
	hdr snapHeader
	got snapTrailer // the counts so far
}

// record adds one record to the state, checking it as Apply would, and
// checking that the records come in the order Persist writes them.
func (rs *restoring) record(rec snapRecord) error {
	st, got := &rs.st, &rs.got
	switch {
	case rec.Cluster != nil:
		if got.Cluster || got.Members > 0 || got.Entries > 0 || got.Tombstones > 0 {
			return errors.New("cluster record out of place")
		}
		got.Cluster = true
		st.cluster = rec.Cluster
	case rec.Member != nil:
		m := *rec.Member
		if got.Entries > 0 || got.Tombstones > 0 {
			return errors.New("member record after the entries")
		}
		if err := validateMember(m); err != nil {
			return err
		}
		if st.cluster == nil || m.CID >= st.cluster.NextCID {
			return fmt.Errorf("member %d: cid was never handed out", m.CID)
		}
		if _, dup := st.members[m.CID]; dup {
			return fmt.Errorf("member %d listed twice", m.CID)
		}
		if err := st.checkUnique(m, 0); err != nil {
			return err
		}
		got.Members++
		st.members[m.CID] = m
	case rec.Entry != nil:
		e := *rec.Entry
		if got.Tombstones > 0 {
			return errors.New("entry record after the tombstones")
		}
		// Not ValidateKey: the state may hold keys written before the ban on
		// "." and ".." segments.
		if err := validateKeySyntax(e.Key); err != nil {
			return err
		}
		if err := validateValue(e.Value); err != nil {
			return err
		}
		if _, dup := st.entries[e.Key]; dup {
			return fmt.Errorf("key %q listed twice", e.Key)
		}
		got.Entries++
		sl := rs.sp.put(&st.seg, e.Value, e.Version)
		st.setEntry(e.Key, sl)
		st.bytes += int64(len(e.Key)) + sl.size()
		if st.bytes > stateBytesLimit {
			return fmt.Errorf("the entries hold over %d bytes, the limit of the configuration store", stateBytesLimit)
		}
	case rec.Tombstone != nil:
		tb := *rec.Tombstone
		if rs.hdr.Format < 2 {
			return fmt.Errorf("tombstone record in a format %d snapshot", rs.hdr.Format)
		}
		if err := validateKeySyntax(tb.Key); err != nil {
			return err
		}
		// Tombstones come by version, which are log indexes, so unique. (Their
		// relation to the horizon and the applied index is not checked, as
		// Restore has never checked versions against the applied index.)
		var last uint64
		if n := len(st.tombs.order); n > 0 {
			last = st.tombs.order[n-1].Version
		}
		if tb.Version <= last {
			return fmt.Errorf("tombstone %q: version %d is not above the previous one, %d", tb.Key, tb.Version, last)
		}
		if _, dup := st.tombs.byKey[tb.Key]; dup {
			return fmt.Errorf("tombstone %q listed twice", tb.Key)
		}
		if _, live := st.entries[tb.Key]; live {
			return fmt.Errorf("tombstone %q for a live entry", tb.Key)
		}
		got.Tombstones++
		st.tombs.add(tb.Key, tb.Version)
		st.bytes += int64(len(tb.Key))
		if st.bytes > stateBytesLimit {
			return fmt.Errorf("the entries and tombstones hold over %d bytes, the limit of the configuration store", stateBytesLimit)
		}
	}
	return nil
}
