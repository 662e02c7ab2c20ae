package mailstore

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/pmgcm/pmgcm/internal/testutil"
)

// Tests from the second review of the intake journal (intake.go, replay.go).

// Accepts, state changes, reads, Wipes and restores at once: none may hang, and
// after the last Wipe or restore every message acknowledged since is stored with
// contiguous sequence numbers.
func TestJournalStress(t *testing.T) {
	dir := t.TempDir()
	var cid atomic.Uint64
	cid.Store(4)
	s := openStore(t, dir, &cid, nil)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var accepted atomic.Int64
	for i := 0; i < 6; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				size := 300
				if i == 0 {
					size = maxInline + 1000
				}
				m, err := s.Accept("a@example.org", []string{"b@example.net"}, bytes.NewReader(message("x", size)))
				if err == nil {
					accepted.Add(1)
					if i == 1 {
						_, _ = s.SetState(m.ID, StateReleased)
					}
				} else if !errors.Is(err, ErrClosed) {
					t.Errorf("accept: %v", err)
					return
				}
			}
		}(i)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			_, _ = s.List(Filter{})
			_, _ = s.Compact()
		}
	}()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for r := 0; r < 6; r++ {
			// Some Accepts acknowledged since the last round (no fixed sleep).
			from := accepted.Load()
			testutil.Poll(t, "accepts go on", 20*time.Second, func() error {
				if accepted.Load() < from+5 {
					return fmt.Errorf("%d accepted", accepted.Load()-from)
				}
				return nil
			})
			if r%2 == 0 {
				if err := s.Wipe(); err != nil && !errors.Is(err, ErrBusy) {
					t.Errorf("wipe: %v", err)
				}
				continue
			}
			g, err := s.BeginRestore()
			if err != nil {
				t.Errorf("begin restore: %v", err)
				continue
			}
			if _, err := g.Import("a@x", []string{"b@y"}, time.Time{}, bytes.NewReader(message("r", 100))); err != nil {
				t.Errorf("import: %v", err)
			}
			if err := g.Commit(); err != nil {
				t.Errorf("commit: %v", err)
				_ = g.Abort()
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("Wipe/Commit hang with Accepts going on")
	}
	close(stop)
	wg.Wait()
	t.Logf("%d accepted", accepted.Load())
	evs, err := s.EventsSince(Cursors{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	last := map[uint64]uint64{}
	for _, ev := range evs {
		if ev.Seq != last[ev.Origin]+1 {
			t.Fatalf("origin %d: event %d after %d", ev.Origin, ev.Seq, last[ev.Origin])
		}
		last[ev.Origin] = ev.Seq
	}
}

// Found by a review (failure isolation), fixed since: a journal record's index request shares its group
// commit with unrelated writers (a peer's body, ApplyEvents, the spool flush). A
// failure of the batch as a whole (a directory fsync another member named, or the
// bbolt commit, e.g. ENOSPC on a full disk) finishes the journal member with an
// error, indexed() stops the journal for good (breakJournal) and every later
// Accept fails until an operator restarts the daemon, even once the cause is gone;
// meanwhile reads miss the acknowledged message. Before the journal the same
// failure failed that one batch. The index request could be retried (its record
// is in the journal) instead of stopping intake.
func TestJournalUnrelatedBatchFailureRetried(t *testing.T) {
	dir := t.TempDir()
	var cid atomic.Uint64
	cid.Store(5)
	s := openStore(t, dir, &cid, nil)
	g := newGate(s)
	// A first batch, held in the committer, so that the next one gathers the
	// journal's index request and a failing unrelated member.
	s.groupEnqueue(&commitReq{apply: func(*bolt.Tx) error { return nil }})
	<-g.entered
	m := accept(t, s, message("acked", 500))
	waitQueued(t, s, 1) // the index request, after indexDelay
	bad := &commitReq{
		apply:   func(*bolt.Tx) error { return nil },
		place:   func() (string, error) { return filepath.Join(dir, "gone-dir"), nil }, // its fsync fails, as a disk's EIO would
		unplace: func() error { return nil },
	}
	s.groupEnqueue(bad)
	close(g.release)
	<-bad.done
	if bad.err == nil {
		t.Fatal("the failing member did not fail")
	}
	// The cause is gone (one failed batch); intake and reads must go on.
	if _, err := s.Get(m.ID); err != nil {
		t.Errorf("acknowledged message %s not readable after an unrelated batch failed: %v", m.ID, err)
	}
	if _, err := s.Accept("a@example.org", []string{"b@example.net"}, bytes.NewReader(message("next", 500))); err != nil {
		t.Errorf("every Accept fails after one unrelated batch failed: %v", err)
	}
}

// Found by a review (the first review's syncfs fix is incomplete), fixed since: checkpoint says that after a
// failed syncfs "the segments stay for Open's replay, which rewrites the bodies from
// them". It does not: replayRecord keeps every indexed body that bodyMatches, and
// bodyMatches reads the page cache. After a writeback error (EIO) Linux marks the
// failed pages clean, so after a restart without a reboot the cached body still
// matches while the disk does not hold it; the replay's syncfs (a new descriptor,
// the error already reported once) succeeds, the segments are removed, and the body
// is lost once the cache drops it. Here the syncfs fails (a closed descriptor stands
// in for the disk's error); the replay must write the bodies again (new files), not
// trust what it reads back.
func TestJournalReplayRewritesBodiesAfterFailedSyncfs(t *testing.T) {
	dir := t.TempDir()
	var cid atomic.Uint64
	cid.Store(8)
	s, err := Open(dir, Options{LocalCID: cid.Load, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	raw := message("cached only", 700)
	m := accept(t, s, raw)
	if _, err := s.Get(m.ID); err != nil { // indexed, its final name linked
		t.Fatal(err)
	}
	// A mark on the body as it is now (its mode): a body written again by the
	// replay is a new file without it (inode numbers are reused at once, so
	// os.SameFile cannot tell).
	if err := os.Chmod(s.BodyPath(m.ID), 0o444); err != nil {
		t.Fatal(err)
	}
	_ = s.fsFile.Close() // the checkpoint's syncfs at Close now fails
	_ = s.Close()
	if len(journalSegments(t, dir)) == 0 {
		t.Fatal("no segment kept after the failed syncfs")
	}
	s2 := openStore(t, dir, &cid, nil)
	checkBody(t, s2, m, raw)
	after, err := os.Stat(s2.BodyPath(m.ID))
	if err != nil {
		t.Fatal(err)
	}
	if after.Mode().Perm() == 0o444 {
		t.Errorf("replay after a failed syncfs kept body %s as read back from the page cache, not rewritten from its record: a writeback error loses it", m.ID)
	}
}

// Found by a review (decoder bound; FuzzReadSegment cannot find it), fixed since: maxRecord lets one payload
// hold maxJournalMeta bytes of metadata, but decodePayload gives whatever the
// metadata does not use to the body: an inline record whose body is four times
// maxInline decodes (FuzzReadSegment asserts the contrary, but its inputs never
// reach a megabyte).
func TestReadSegmentBodyBound(t *testing.T) {
	body := bytes.Repeat([]byte("x"), 4*maxInline)
	meta, _ := json.Marshal(Meta{ID: "1-1", Origin: 1, Seq: 1, Size: int64(len(body))})
	var p []byte
	p = append(p, recInline)
	p = binary.BigEndian.AppendUint64(p, 0)
	p = binary.BigEndian.AppendUint32(p, uint32(len(meta)))
	p = append(p, meta...)
	p = binary.BigEndian.AppendUint16(p, uint16(len("accept-1")))
	p = append(p, "accept-1"...)
	p = append(p, body...)
	seg := []byte(journalMagic)
	seg = binary.BigEndian.AppendUint32(seg, uint32(len(p)))
	seg = binary.BigEndian.AppendUint32(seg, crc32.Checksum(p, crcTable))
	seg = append(seg, p...)
	err := readSegment(bytes.NewReader(seg), func(r *jrecord) error {
		if len(r.body) > maxInline {
			t.Errorf("decoded an inline body of %d bytes, bound %d", len(r.body), maxInline)
		}
		return nil
	})
	if err != nil && !errors.Is(err, errTorn) {
		t.Fatal(err)
	}
}
