package raftnode

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	raftwal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
	"golang.org/x/sys/unix"

	"github.com/pmgcm/pmgcm/internal/dirsync"
)

// The Raft log and stable store live in a write-ahead log (hashicorp/raft-wal) in
// <dir>/wal: one fsync per appended batch, where raft-boltdb's bbolt commit costs two (data
// pages, then the meta page). Releases up to 1ca55cd kept both in <dir>/raft.db; Open
// migrates such a directory in place (see migrateBolt), and a crash at any point of the
// migration leaves a directory that opens, with the old store or with the new one.
//
// After the migration raft.db is a directory holding a note (fenceNote): a build that only
// knows raft.db refuses to start on it (it cannot open a directory as a database) instead
// of starting with an empty log, which would let it vote twice in a term and forget
// entries it acknowledged. The old file stays beside it as raft.db.pre-wal.

// logStore is what Raft needs of the node's storage: its log, its stable store, Close.
type logStore interface {
	raft.LogStore
	raft.StableStore
	io.Closer
}

// WALDir is the directory of the Raft write-ahead log inside dir.
func WALDir(dir string) string { return filepath.Join(dir, "wal") }

// PreWALPath is where the migration to the write-ahead log keeps the raft.db it copied.
func PreWALPath(dir string) string { return filepath.Join(dir, "raft.db.pre-wal") }

const (
	walTmpName   = "wal.tmp"
	lockName     = "raft.lock"
	fenceNote    = "README.txt"
	migrateBatch = 1 << 20 // bytes of entries per append while migrating
)

const fenceText = `This node's Raft log moved from raft.db to the write-ahead log in ../wal when a
newer pmgclusterd first started on it. raft.db is a directory so that an older
pmgclusterd refuses to start here instead of starting with an empty log.
../raft.db.pre-wal is the old file as it was at that moment: it lacks every entry
written since. To run an older build on this node, delete the node from its
cluster (pmgcm delete <cid> on another member), move this data directory aside and
join the node again (pmgcm join).
`

// migrateStep, when set (by tests), is called after each step of a migration; an error
// stops the migration there as a crash would.
var migrateStep func(step string) error

func stepDone(step string) error {
	if migrateStep == nil {
		return nil
	}
	return migrateStep(step)
}

// walStore is the write-ahead log with its meta database and the directory lock that
// guards it.
type walStore struct {
	*raftwal.WAL
	meta *metadb.BoltMetaDB
	lock *os.File
}

// Close closes the log and releases the lock.
func (s *walStore) Close() error {
	err := closeWAL(s.WAL, s.meta)
	return errors.Join(err, s.lock.Close())
}

// walSegmentSize is the size of a write-ahead log segment, allocated whole when the
// segment is made (raft-wal's default is 64 MiB). The configuration store holds entries of
// at most 1 MiB and is snapshotted every few thousand of them: 16 MiB keeps a few
// segments' worth of log on a small disk without rotating often.
const walSegmentSize = 16 << 20

// openWAL opens the write-ahead log in dir with a meta database of its own, which
// closeWAL closes with the log (raft-wal v0.4.0's Close left it open; since v0.4.1 Close
// closes it too, and a second Close is a no-op).
func openWAL(dir string, logger hclog.Logger) (*raftwal.WAL, *metadb.BoltMetaDB, error) {
	meta := &metadb.BoltMetaDB{}
	w, err := raftwal.Open(dir, raftwal.WithLogger(logger.Named("wal")), raftwal.WithMetaStore(meta),
		raftwal.WithSegmentSize(walSegmentSize))
	if err != nil {
		return nil, nil, errors.Join(err, meta.Close())
	}
	return w, meta, nil
}

func closeWAL(w *raftwal.WAL, meta *metadb.BoltMetaDB) error {
	err := w.Close()
	return errors.Join(err, meta.Close())
}

// openLogStore locks dir, migrates a raft.db of an older release into the write-ahead log
// if there is one, and opens the log. A lock held past timeout yields ErrLocked; a store
// that cannot be read yields ErrCorrupt with its path.
func openLogStore(dir string, timeout time.Duration, logger hclog.Logger) (logStore, error) {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	lock, err := lockFile(filepath.Join(dir, lockName), timeout)
	if err != nil {
		return nil, err
	}
	s, err := openLocked(dir, timeout, logger)
	if err != nil {
		_ = lock.Close()
		return nil, err
	}
	s.lock = lock
	return s, nil
}

func openLocked(dir string, timeout time.Duration, logger hclog.Logger) (*walStore, error) {
	walDir, dbPath := WALDir(dir), DBPath(dir)
	walExists, err := exists(walDir)
	if err != nil {
		return nil, err
	}
	if !walExists {
		dbFile, err := isRegular(dbPath)
		if err != nil {
			return nil, err
		}
		if dbFile {
			if err := migrateBolt(dir, timeout, logger); err != nil {
				return nil, err
			}
		} else if err := os.Mkdir(walDir, 0o700); err != nil {
			return nil, fmt.Errorf("create %s: %w", walDir, err)
		}
	}
	// The log is in place: set raft.db aside and fence it if a crash came first.
	if err := finishMigration(dir); err != nil {
		return nil, err
	}
	if err := checkSegmentHeaders(walDir); err != nil {
		return nil, err
	}
	w, meta, err := openWAL(walDir, logger)
	if err != nil {
		if errors.Is(err, os.ErrPermission) {
			return nil, fmt.Errorf("open %s: %w", walDir, err)
		}
		return nil, storeErr(walDir, err)
	}
	return &walStore{WAL: w, meta: meta}, nil
}

// migrateBolt copies the stable store values and every log entry of dir's raft.db into a
// new write-ahead log, built in wal.tmp and renamed to wal once it is complete and synced.
// raft.db is left as it is; finishMigration sets it aside.
func migrateBolt(dir string, timeout time.Duration, logger hclog.Logger) (err error) {
	dbPath, tmp := DBPath(dir), filepath.Join(dir, walTmpName)
	src, err := openStore(dbPath, timeout)
	if err != nil {
		return err
	}
	defer func() {
		// A damaged database can make bbolt panic on a page read.
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %s: %v", ErrCorrupt, dbPath, r)
		}
		err = errors.Join(err, src.Close())
	}()
	first, err := src.FirstIndex()
	if err != nil {
		return storeErr(dbPath, err)
	}
	last, err := src.LastIndex()
	if err != nil {
		return storeErr(dbPath, err)
	}
	logger.Info("moving the raft log from raft.db to a write-ahead log", "entries", entriesBetween(first, last), "first", first, "last", last)
	start := time.Now()
	if err := os.RemoveAll(tmp); err != nil {
		return fmt.Errorf("remove %s: %w", tmp, err)
	}
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", tmp, err)
	}
	dst, meta, err := openWAL(tmp, logger)
	if err != nil {
		return fmt.Errorf("create the write-ahead log in %s: %w", tmp, err)
	}
	if err := copyStore(dst, src, dbPath, first, last); err != nil {
		_ = closeWAL(dst, meta)
		return err
	}
	// Every append and every stable Set above was synced before it returned.
	if err := closeWAL(dst, meta); err != nil {
		return fmt.Errorf("close %s: %w", tmp, err)
	}
	if err := dirsync.Sync(tmp); err != nil {
		return err
	}
	if err := stepDone("closed"); err != nil {
		return err
	}
	if err := os.Rename(tmp, WALDir(dir)); err != nil {
		return fmt.Errorf("rename %s: %w", tmp, err)
	}
	if err := dirsync.Sync(dir); err != nil {
		return err
	}
	if err := stepDone("renamed"); err != nil {
		return err
	}
	logger.Info("raft log moved to the write-ahead log", "dir", WALDir(dir), "duration", time.Since(start).Round(time.Millisecond))
	return nil
}

func entriesBetween(first, last uint64) uint64 {
	if last == 0 || last < first {
		return 0
	}
	return last - first + 1
}

// copyStore copies Raft's stable keys and the log entries first..last from src to dst.
func copyStore(dst, src logStore0, dbPath string, first, last uint64) error {
	for _, k := range []string{"CurrentTerm", "LastVoteTerm"} {
		v, err := src.GetUint64([]byte(k))
		if err != nil && !isNotFound(err) {
			return fmt.Errorf("%w: %s: read %s: %v", ErrCorrupt, dbPath, k, err)
		}
		if err == nil {
			if err := dst.SetUint64([]byte(k), v); err != nil {
				return fmt.Errorf("copy %s: %w", k, err)
			}
		}
	}
	if v, err := src.Get([]byte("LastVoteCand")); err != nil && !isNotFound(err) {
		return fmt.Errorf("%w: %s: read LastVoteCand: %v", ErrCorrupt, dbPath, err)
	} else if err == nil {
		if err := dst.Set([]byte("LastVoteCand"), v); err != nil {
			return fmt.Errorf("copy LastVoteCand: %w", err)
		}
	}
	if err := stepDone("stable"); err != nil {
		return err
	}
	if entriesBetween(first, last) == 0 {
		return nil
	}
	var batch []*raft.Log
	size := 0
	for idx := first; idx <= last; idx++ {
		l := new(raft.Log)
		if err := src.GetLog(idx, l); err != nil {
			return fmt.Errorf("%w: %s: read log entry %d: %v", ErrCorrupt, dbPath, idx, err)
		}
		batch = append(batch, l)
		size += len(l.Data) + len(l.Extensions) + 32
		if size >= migrateBatch || idx == last {
			if err := dst.StoreLogs(batch); err != nil {
				return fmt.Errorf("copy log entries up to %d: %w", idx, err)
			}
			if err := stepDone("batch"); err != nil {
				return err
			}
			batch, size = batch[:0], 0
		}
	}
	return nil
}

// logStore0 is a log and stable store without Close (the two stores of a migration).
type logStore0 interface {
	raft.LogStore
	raft.StableStore
}

// isNotFound tells raft-boltdb's "not found" of a key that was never set (hashicorp/raft
// matches it by its text; here it is matched by identity).
func isNotFound(err error) bool { return errors.Is(err, raftboltdb.ErrKeyNotFound) }

// finishMigration sets a raft.db file aside once the write-ahead log is in place and puts
// the fence directory in its place. Each step is a rename or a mkdir, synced.
func finishMigration(dir string) error {
	dbPath := DBPath(dir)
	dbFile, err := isRegular(dbPath)
	if err != nil {
		return err
	}
	if dbFile {
		if err := os.Rename(dbPath, PreWALPath(dir)); err != nil {
			return fmt.Errorf("set %s aside: %w", dbPath, err)
		}
		if err := dirsync.Sync(dir); err != nil {
			return err
		}
		if err := stepDone("aside"); err != nil {
			return err
		}
	}
	note := filepath.Join(dbPath, fenceNote)
	if ok, err := exists(note); err != nil || ok {
		return err
	}
	if err := os.MkdirAll(dbPath, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dbPath, err)
	}
	if err := os.WriteFile(note, []byte(fenceText), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", note, err)
	}
	if err := dirsync.Sync(dbPath); err != nil {
		return err
	}
	return dirsync.Sync(dir)
}

// segmentMagic opens every raft-wal segment file (little-endian uint32 at offset 0).
const segmentMagic = 0x58eb6b0d

// checkSegmentHeaders refuses segment files whose header is neither zeros (a segment
// created but never appended to, preallocated) nor raft-wal's: raft-wal recovers its tail
// segment without checking the header, as after a torn first write, and so would read a
// garbled tail as an empty one and open with a shorter log. Under the assumption that
// raft-wal makes of the disk (an append never garbles what is already written, so an
// unwritten header reads as zeros) this is corruption, never a crash.
func checkSegmentHeaders(walDir string) error {
	segs, err := filepath.Glob(filepath.Join(walDir, "*.wal"))
	if err != nil {
		return err
	}
	for _, path := range segs {
		f, err := os.Open(path)
		if err != nil {
			return fmt.Errorf("open %s: %w", path, err)
		}
		var hdr [8]byte
		n, err := io.ReadFull(f, hdr[:])
		_ = f.Close()
		if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
			return fmt.Errorf("read %s: %w", path, err)
		}
		zero := hdr == [8]byte{}
		ok := n == len(hdr) && binary.LittleEndian.Uint32(hdr[:4]) == segmentMagic && hdr[7] == 0
		if !zero && !ok {
			return fmt.Errorf("%w: %s: %s is not a write-ahead log segment (bad header)", ErrCorrupt, walDir, filepath.Base(path))
		}
	}
	return nil
}

func exists(path string) (bool, error) {
	_, err := os.Lstat(path)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	default:
		return false, fmt.Errorf("stat %s: %w", path, err)
	}
}

func isRegular(path string) (bool, error) {
	fi, err := os.Lstat(path)
	switch {
	case err == nil:
		return fi.Mode().IsRegular(), nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	default:
		return false, fmt.Errorf("stat %s: %w", path, err)
	}
}

// lockFile takes an exclusive flock on path, trying until timeout as bbolt does with
// raft.db (flock has no timed wait).
func lockFile(path string, timeout time.Duration) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	deadline := time.Now().Add(timeout)
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			_ = f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if timeout <= 0 || time.Now().After(deadline) {
			_ = f.Close()
			return nil, fmt.Errorf("%w: %s (held for more than %s)", ErrLocked, path, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
