package raftnode

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/pmgcm/pmgcm/fsm"
)

// oldEntries is how many configuration entries makeBoltDir writes: with 8 KiB values they
// span several migration batches.
const oldEntries = 300

func oldValue(i int) []byte { return bytes.Repeat([]byte{byte('a' + i%26)}, 8<<10) }

// makeBoltDir makes a Raft directory the way release 1ca55cd did: raft-boltdb as the log
// and stable store (openStore), the file snapshot store, a bootstrapped single voter, and
// oldEntries configuration entries applied. It returns the raft.db's stable values.
func makeBoltDir(t *testing.T, dir string) (term, last uint64) {
	t.Helper()
	return makeBoltDirWith(t, dir, false)
}

// makeBoltDirWith is makeBoltDir; with compact, a snapshot is taken halfway and the log
// before it dropped, so the log starts past index 1.
func makeBoltDirWith(t *testing.T, dir string, compact bool) (term, last uint64) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	layer := newLayer(t)
	cfg := testConfig(dir, layer)
	store, err := openStore(DBPath(dir), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, 2, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	trans := raft.NewNetworkTransport(layer.Next(), 3, 5*time.Second, os.Stderr)
	rc := cfg.raftConfig()
	rc.Logger = hclog.NewNullLogger()
	if compact {
		rc.TrailingLogs = 10
	}
	r, err := raft.NewRaft(rc, fsm.New(), store, store, snaps, trans)
	if err != nil {
		t.Fatal(err)
	}
	conf := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: cfg.LocalID, Address: cfg.Address}}}
	if err := r.BootstrapCluster(conf).Error(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for r.State() != raft.Leader {
		if time.Now().After(deadline) {
			t.Fatal("old-format node never became leader")
		}
		select {
		case <-r.LeaderCh():
		case <-time.After(50 * time.Millisecond):
		}
	}
	for i := 0; i < oldEntries; i++ {
		b, err := fsm.Encode(fsm.ConfigSet{Key: fmt.Sprintf("k/%03d", i), Value: oldValue(i)})
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Apply(b, 5*time.Second).Error(); err != nil {
			t.Fatal(err)
		}
		if compact && i == oldEntries/2 {
			if err := r.Snapshot().Error(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := r.Shutdown().Error(); err != nil {
		t.Fatal(err)
	}
	_ = trans.Close()
	term, err = store.GetUint64([]byte("CurrentTerm"))
	if err != nil || term == 0 {
		t.Fatalf("old store term = %d, %v", term, err)
	}
	if last, err = store.LastIndex(); err != nil {
		t.Fatal(err)
	}
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}
	return term, last
}

// checkOldEntries opens a Node on dir and checks that every entry makeBoltDir wrote is
// applied and that the term did not go back.
func checkOldEntries(t *testing.T, dir string, term, last uint64) {
	t.Helper()
	n, f := openNode(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.WaitApplied(ctx, last); err != nil {
		t.Fatalf("wait for the old entries to apply after migration: %v", err)
	}
	for i := 0; i < oldEntries; i++ {
		e, ok, _ := f.Get(fmt.Sprintf("k/%03d", i))
		if !ok || !bytes.Equal(e.Value, oldValue(i)) {
			t.Fatalf("entry %d after migration: ok=%v len=%d", i, ok, len(e.Value))
		}
	}
	if st := n.Stats(); st.Term <= term {
		t.Fatalf("term after migration = %d, want above the old %d", st.Term, term)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestMigrateBoltDir: a raft.db made as release 1ca55cd made it moves into the
// write-ahead log on Open: the same stable values, the same entries (compared one by
// one with the file that was set aside), raft.db fenced with a note.
func TestMigrateBoltDir(t *testing.T) {
	dir := t.TempDir()
	_, lastOld := makeBoltDir(t, dir)
	// The stable values and entries as the old store has them.
	old, err := openStore(DBPath(dir), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	first, _ := old.FirstIndex()
	last, _ := old.LastIndex()
	var oldLogs []raft.Log
	for i := first; i <= last; i++ {
		var l raft.Log
		if err := old.GetLog(i, &l); err != nil {
			t.Fatal(err)
		}
		oldLogs = append(oldLogs, l)
	}
	oldTerm, _ := old.GetUint64([]byte("CurrentTerm"))
	oldVoteTerm, _ := old.GetUint64([]byte("LastVoteTerm"))
	oldVote, _ := old.Get([]byte("LastVoteCand"))
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	if len(oldLogs) < oldEntries {
		t.Fatalf("old log has %d entries", len(oldLogs))
	}

	s, err := openLogStore(dir, time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetUint64([]byte("CurrentTerm")); got != oldTerm {
		t.Errorf("CurrentTerm = %d, want %d", got, oldTerm)
	}
	if got, _ := s.GetUint64([]byte("LastVoteTerm")); got != oldVoteTerm {
		t.Errorf("LastVoteTerm = %d, want %d", got, oldVoteTerm)
	}
	if got, _ := s.Get([]byte("LastVoteCand")); !bytes.Equal(got, oldVote) {
		t.Errorf("LastVoteCand = %q, want %q", got, oldVote)
	}
	f, _ := s.FirstIndex()
	l, _ := s.LastIndex()
	if f != first || l != last {
		t.Fatalf("wal holds %d..%d, raft.db held %d..%d", f, l, first, last)
	}
	for _, want := range oldLogs {
		var got raft.Log
		if err := s.GetLog(want.Index, &got); err != nil {
			t.Fatal(err)
		}
		if got.Index != want.Index || got.Term != want.Term || got.Type != want.Type ||
			!bytes.Equal(got.Data, want.Data) || !bytes.Equal(got.Extensions, want.Extensions) ||
			!got.AppendedAt.Equal(want.AppendedAt) {
			t.Fatalf("entry %d differs after migration", want.Index)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(PreWALPath(dir)); err != nil || !fi.Mode().IsRegular() {
		t.Fatalf("raft.db.pre-wal: %v", err)
	}
	if _, err := os.Stat(filepath.Join(DBPath(dir), fenceNote)); err != nil {
		t.Fatalf("fence note: %v", err)
	}
	// An older build's open of raft.db now fails instead of starting on an empty log.
	if _, err := openStore(DBPath(dir), 100*time.Millisecond); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("old-style open of the fenced raft.db = %v, want an error", err)
	}
	checkOldEntries(t, dir, oldTerm, lastOld)
}

// TestMigrateCrashAtEachStep: a migration stopped after any of its steps (as a crash
// would stop it) leaves a directory that opens, with the old store or the new one, and
// the next Open completes the migration with nothing lost.
func TestMigrateCrashAtEachStep(t *testing.T) {
	steps := []string{"stable", "batch", "closed", "renamed", "aside"}
	for _, step := range steps {
		t.Run(step, func(t *testing.T) {
			dir := t.TempDir()
			term, last := makeBoltDir(t, dir)
			crash := errors.New("crash at " + step)
			migrateStep = func(s string) error {
				if s == step {
					return crash
				}
				return nil
			}
			_, err := openLogStore(dir, time.Second, nil)
			migrateStep = nil
			if !errors.Is(err, crash) {
				t.Fatalf("open with a crash at %s = %v", step, err)
			}
			walThere, _ := exists(WALDir(dir))
			dbFile, _ := isRegular(DBPath(dir))
			switch step {
			case "stable", "batch", "closed":
				if walThere || !dbFile {
					t.Fatalf("before the rename: wal %v, raft.db file %v; want the old store only", walThere, dbFile)
				}
			case "renamed":
				if !walThere || !dbFile {
					t.Fatalf("after the rename: wal %v, raft.db file %v", walThere, dbFile)
				}
			case "aside":
				if !walThere || dbFile {
					t.Fatalf("after setting aside: wal %v, raft.db file %v", walThere, dbFile)
				}
			}
			checkOldEntries(t, dir, term, last)
			if _, err := os.Stat(filepath.Join(dir, walTmpName)); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("wal.tmp left behind: %v", err)
			}
		})
	}
}

// TestOpenCorruptWAL: a damaged write-ahead log is refused with ErrCorrupt naming it, and
// a damaged raft.db of an older release is refused before anything is migrated.
func TestOpenCorruptWAL(t *testing.T) {
	dir := t.TempDir()
	n, _ := openNode(t, dir)
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	meta := filepath.Join(WALDir(dir), "wal-meta.db")
	if err := os.WriteFile(meta, bytes.Repeat([]byte("garbage!"), 1024), 0o600); err != nil {
		t.Fatal(err)
	}
	layer := newLayer(t)
	n2, _ := New(testConfig(dir, layer), fsm.New(), layer.Next)
	if err := n2.Open(); !errors.Is(err, ErrCorrupt) || !bytes.Contains([]byte(err.Error()), []byte(WALDir(dir))) {
		t.Fatalf("open of a garbage wal-meta.db = %v, want ErrCorrupt naming %s", err, WALDir(dir))
	}
	_ = layer.Close()

	dir2 := t.TempDir()
	if err := os.WriteFile(DBPath(dir2), []byte("this is not a bolt database, not at all; it is long enough to have pages........"), 0o600); err != nil {
		t.Fatal(err)
	}
	layer3 := newLayer(t)
	n3, _ := New(testConfig(dir2, layer3), fsm.New(), layer3.Next)
	if err := n3.Open(); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("open of a garbage raft.db = %v, want ErrCorrupt", err)
	}
	_ = layer3.Close()
	if ok, _ := exists(WALDir(dir2)); ok {
		t.Fatal("a write-ahead log was made from a garbage raft.db")
	}
}

// TestMigrateCompactedAndEmpty: a raft.db whose log starts after a snapshot (first index
// past 1) and one with no entry at all (a node that never bootstrapped) migrate too.
func TestMigrateCompactedAndEmpty(t *testing.T) {
	dir := t.TempDir()
	term, last := makeBoltDirWith(t, dir, true)
	old, err := openStore(DBPath(dir), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	first, _ := old.FirstIndex()
	_ = old.Close()
	if first <= 1 {
		t.Fatalf("compacted log starts at %d", first)
	}
	s, err := openLogStore(dir, time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	if f, _ := s.FirstIndex(); f != first {
		t.Fatalf("wal starts at %d, raft.db at %d", f, first)
	}
	_ = s.Close()
	checkOldEntries(t, dir, term, last)

	empty := t.TempDir()
	st, err := openStore(DBPath(empty), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.SetUint64([]byte("CurrentTerm"), 7); err != nil {
		t.Fatal(err)
	}
	_ = st.Close()
	s2, err := openLogStore(empty, time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if l, _ := s2.LastIndex(); l != 0 {
		t.Fatalf("empty raft.db migrated to a log ending at %d", l)
	}
	if v, _ := s2.GetUint64([]byte("CurrentTerm")); v != 7 {
		t.Fatalf("CurrentTerm of the empty raft.db = %d, want 7", v)
	}
	if v, err := s2.Get([]byte("LastVoteCand")); err != nil || len(v) != 0 {
		t.Fatalf("LastVoteCand never set = %q, %v", v, err)
	}
}

// TestWALTailTruncationReopens is the case that made raft-wal v0.4.0 unusable here: a
// follower that clears a log suffix (raft's DeleteRange from a conflicting index to the
// end) seals a segment without its index block, and the next start fails with "sealed
// segment has no index block" (raft-wal #31, fixed in v0.4.1). It truncates the tail both
// inside the active segment and across segments, appends again, reopens, and reads every
// entry back.
func TestWALTailTruncationReopens(t *testing.T) {
	value := bytes.Repeat([]byte("v"), 64<<10)
	entry := func(i uint64, term uint64) *raft.Log {
		return &raft.Log{Index: i, Term: term, Type: raft.LogCommand, Data: append([]byte(fmt.Sprintf("%d/%d:", term, i)), value...)}
	}
	for _, tc := range []struct {
		name    string
		entries uint64 // written in term 1
		cutFrom uint64 // DeleteRange(cutFrom, entries)
		rewrite uint64 // then written in term 2 from cutFrom on
	}{
		{"within the tail segment", 40, 40, 3},
		{"across segments", 600, 100, 5},
		{"whole tail segment, nothing after", 600, 300, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s, err := openLogStore(dir, time.Second, nil)
			if err != nil {
				t.Fatal(err)
			}
			for i := uint64(1); i <= tc.entries; i++ {
				if err := s.StoreLog(entry(i, 1)); err != nil {
					t.Fatalf("store %d: %v", i, err)
				}
			}
			if err := s.DeleteRange(tc.cutFrom, tc.entries); err != nil {
				t.Fatalf("delete %d-%d: %v", tc.cutFrom, tc.entries, err)
			}
			last := tc.cutFrom - 1
			for i := uint64(0); i < tc.rewrite; i++ {
				last++
				if err := s.StoreLog(entry(last, 2)); err != nil {
					t.Fatalf("store %d again: %v", last, err)
				}
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s, err = openLogStore(dir, time.Second, nil)
			if err != nil {
				t.Fatalf("reopen after a tail truncation: %v", err)
			}
			defer s.Close()
			got, err := s.LastIndex()
			if err != nil || got != last {
				t.Fatalf("last index after reopen = %d, %v; want %d", got, err, last)
			}
			for i := uint64(1); i <= last; i++ {
				var l raft.Log
				if err := s.GetLog(i, &l); err != nil {
					t.Fatalf("entry %d after reopen: %v", i, err)
				}
				want := entry(i, 1)
				if i >= tc.cutFrom {
					want = entry(i, 2)
				}
				if l.Term != want.Term || !bytes.Equal(l.Data, want.Data) {
					t.Fatalf("entry %d after reopen: term %d, want %d", i, l.Term, want.Term)
				}
			}
		})
	}
}
