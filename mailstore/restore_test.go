package mailstore

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// subjects lists the subjects of s's live messages with their states, sorted.
func subjects(t *testing.T, s *Store) string {
	t.Helper()
	list, err := s.List(Filter{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range list {
		out = append(out, m.Subject+"="+m.State)
	}
	sort.Strings(out)
	return strings.Join(out, ",")
}

func restoreStore(t *testing.T) (*Store, string) {
	t.Helper()
	var cid atomic.Uint64
	dir := filepath.Join(t.TempDir(), "mail")
	return openStore(t, dir, &cid, nil), dir
}

// TestRestoreAbortChangesNothing: a staged restore that is aborted leaves the live store
// exactly as it was, and no staging directory behind.
func TestRestoreAbortChangesNothing(t *testing.T) {
	s, dir := restoreStore(t)
	a := accept(t, s, message("a", 100))
	if _, err := s.SetState(a.ID, StateReleased); err != nil {
		t.Fatal(err)
	}
	accept(t, s, message("b", 100))
	before := subjects(t, s)
	g, err := s.BeginRestore()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Import("x@example.org", []string{"y@example.org"}, time.Time{}, bytes.NewReader(message("restored", 10))); err != nil {
		t.Fatal(err)
	}
	if got := subjects(t, s); got != before {
		t.Fatalf("staging changed the live store: %s, was %s", got, before)
	}
	if _, err := s.BeginRestore(); !errors.Is(err, ErrBusy) {
		t.Fatalf("a second restore at once: %v", err)
	}
	if err := g.Abort(); err != nil {
		t.Fatal(err)
	}
	if got := subjects(t, s); got != before {
		t.Fatalf("after Abort: %s, was %s", got, before)
	}
	if _, err := os.Stat(stagingDir(dir)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("staging directory left behind: %v", err)
	}
	if err := g.Commit(); err == nil {
		t.Fatal("Commit after Abort succeeded")
	}
}

// TestRestoreCommitReplaces: Commit swaps the staged content in whole (messages, states,
// bodies, stats), keeps the messages accepted during the restore, and the store works on.
func TestRestoreCommitReplaces(t *testing.T) {
	s, dir := restoreStore(t)
	accept(t, s, message("old", 100))
	changed := s.Changed()
	g, err := s.BeginRestore()
	if err != nil {
		t.Fatal(err)
	}
	raw := message("restored", 300)
	m, err := g.Import("x@example.org", []string{"y@example.org"}, time.Unix(1e9, 0), bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.SetState(m.ID, StateReleased); err != nil {
		t.Fatal(err)
	}
	accept(t, s, message("meanwhile", 50)) // SMTP goes on during the restore
	if err := g.Commit(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	default:
		t.Fatal("Commit did not signal a change")
	}
	if got, want := subjects(t, s), "meanwhile=quarantined,restored=released"; got != want {
		t.Fatalf("after Commit: %s, want %s", got, want)
	}
	if !bytes.Equal(readBody(t, s, m.ID), raw) {
		t.Fatal("restored body differs")
	}
	if got, err := s.Get(m.ID); err != nil || !got.Received.Equal(time.Unix(1e9, 0)) {
		t.Fatalf("restored message: %+v %v", got, err)
	}
	if n, b := s.Stats(); n != 2 || b <= int64(len(raw)) {
		t.Fatalf("stats %d messages %d bytes", n, b)
	}
	for _, d := range []string{stagingDir(dir), swapOldDir(dir)} {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s left behind: %v", d, err)
		}
	}
	accept(t, s, message("after", 10))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	var cid atomic.Uint64
	s2 := openStore(t, dir, &cid, nil)
	if got, want := subjects(t, s2), "after=quarantined,meanwhile=quarantined,restored=released"; got != want {
		t.Fatalf("after reopen: %s, want %s", got, want)
	}
}

// TestRestoreInterruptedSwap: Open finishes or undoes a swap that a crash cut short.
func TestRestoreInterruptedSwap(t *testing.T) {
	var cid atomic.Uint64
	s, dir := restoreStore(t)
	accept(t, s, message("kept", 10))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Crash after the first rename: the store is put back, the staging dropped.
	if err := os.Rename(dir, swapOldDir(dir)); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(stagingDir(dir), "bodies"), 0o750); err != nil {
		t.Fatal(err)
	}
	s2 := openStore(t, dir, &cid, nil)
	if got := subjects(t, s2); got != "kept=quarantined" {
		t.Fatalf("after an interrupted swap: %q", got)
	}
	if _, err := os.Stat(stagingDir(dir)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("staging left behind: %v", err)
	}
	if err := s2.Close(); err != nil {
		t.Fatal(err)
	}
	// Crash after the second rename: the old copy is removed.
	if err := os.MkdirAll(filepath.Join(swapOldDir(dir), "bodies"), 0o750); err != nil {
		t.Fatal(err)
	}
	s3 := openStore(t, dir, &cid, nil)
	if got := subjects(t, s3); got != "kept=quarantined" {
		t.Fatalf("after a finished swap: %q", got)
	}
	if _, err := os.Stat(swapOldDir(dir)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("old copy left behind: %v", err)
	}
}

// TestRestoreCommitWaitsForBusyBodies: while a body of the live store is being
// received, Commit refuses with ErrBusy and changes nothing; once it is done, Commit
// goes through.
func TestRestoreCommitWaitsForBusyBodies(t *testing.T) {
	s, _ := restoreStore(t)
	accept(t, s, message("kept", 10))
	raw := message("remote", 10)
	m := Meta{ID: MakeID(2, 1), Origin: 2, Seq: 1, From: "a@x.test", To: []string{"b@example.com"},
		Size: int64(len(raw)), SHA256: sha(raw), State: StateQuarantined, Received: time.Unix(1e9, 0).UTC()}
	if _, err := s.ApplyEvent(Event{Origin: 2, Seq: 1, Kind: KindNew, MsgID: m.ID, Msg: &m, At: m.Received}); err != nil {
		t.Fatal(err)
	}
	w, _, err := s.BeginBody(m.ID)
	if err != nil {
		t.Fatal(err)
	}
	g, err := s.BeginRestore()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Import("x@example.org", nil, time.Time{}, bytes.NewReader(message("restored", 10))); err != nil {
		t.Fatal(err)
	}
	before := subjects(t, s)
	if err := g.Commit(); !errors.Is(err, ErrBusy) {
		t.Fatalf("Commit with a body in flight: %v, want ErrBusy", err)
	}
	if got := subjects(t, s); got != before {
		t.Fatalf("a refused Commit changed the store: %s, was %s", got, before)
	}
	_ = w.Close()
	if err := g.Commit(); err != nil {
		t.Fatal(err)
	}
	if got := subjects(t, s); got != "restored=quarantined" {
		t.Fatalf("after Commit: %s", got)
	}
}

func sha(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// TestRestoreRemovesOldContentUnlocked: the replaced content (a file per message) is
// removed with the store serving the new one, not under its lock; and no second
// restore begins before it is gone.
func TestRestoreRemovesOldContentUnlocked(t *testing.T) {
	s, _ := restoreStore(t)
	accept(t, s, message("old", 100))
	g, err := s.BeginRestore()
	if err != nil {
		t.Fatal(err)
	}
	m, err := g.Import("x@example.org", []string{"y@example.org"}, time.Unix(1e9, 0), bytes.NewReader(message("restored", 300)))
	if err != nil {
		t.Fatal(err)
	}
	removed := false
	old := removeOldContent
	t.Cleanup(func() { removeOldContent = old })
	removeOldContent = func(path string) error {
		got := make(chan error, 1)
		go func() {
			_, err := s.Get(m.ID)
			got <- err
		}()
		select {
		case err := <-got:
			if err != nil {
				t.Errorf("Get of the restored message while the old content goes: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("a Get waited on the store while the old content was removed")
		}
		if _, err := s.BeginRestore(); !errors.Is(err, ErrBusy) {
			t.Errorf("a restore began while the old content was removed: %v", err)
		}
		removed = true
		return os.RemoveAll(path)
	}
	if err := g.Commit(); err != nil {
		t.Fatal(err)
	}
	if !removed {
		t.Fatal("the old content was not removed")
	}
	g2, err := s.BeginRestore()
	if err != nil {
		t.Fatalf("a restore after the first one: %v", err)
	}
	_ = g2.Abort()
}
