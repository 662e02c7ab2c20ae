package mailstore

import (
	"bytes"
	"errors"
	"io"
	"os"
	"reflect"
	"sync/atomic"
	"testing"
)

func TestResumableBody(t *testing.T) {
	a := newStore(t, 1)
	dir := t.TempDir()
	var cid atomic.Uint64
	cid.Store(2)
	b := openStore(t, dir, &cid, nil)
	raw := message("big", 300_000)
	m := accept(t, a, raw)
	if need := replicate(t, a, b); len(need) != 1 {
		t.Fatalf("need %v", need)
	}
	w, off, err := b.BeginBody(m.ID)
	if err != nil || off != 0 {
		t.Fatalf("begin: %d %v", off, err)
	}
	if _, _, err := b.BeginBody(m.ID); !errors.Is(err, ErrBusy) {
		t.Fatalf("second writer: %v", err)
	}
	half := int64(len(raw) / 2)
	if _, err := w.Write(raw[:half]); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil { // a broken transfer
		t.Fatal(err)
	}
	_ = b.Close()
	b = openStore(t, dir, &cid, nil)
	w, off, err = b.BeginBody(m.ID)
	if err != nil || off != half {
		t.Fatalf("resume: offset %d (want %d) %v", off, half, err)
	}
	if _, err := io.Copy(w, bytes.NewReader(raw[off:])); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(); err != nil {
		t.Fatalf("commit: %v", err)
	}
	if !b.HasBody(m.ID) || !bytes.Equal(readBody(t, b, m.ID), raw) {
		t.Fatal("body not stored")
	}
	if missing, _ := b.Missing(); len(missing) != 0 {
		t.Fatalf("missing %v", missing)
	}
	if _, _, err := b.BeginBody(m.ID); !errors.Is(err, ErrExists) {
		t.Fatalf("begin on present body: %v", err)
	}
}

func TestCommitChecksumMismatch(t *testing.T) {
	a, b := newStore(t, 1), newStore(t, 2)
	raw := message("c", 4096)
	m := accept(t, a, raw)
	replicate(t, a, b)
	w, _, _ := b.BeginBody(m.ID)
	bad := append([]byte(nil), raw...)
	bad[len(bad)-1] ^= 0xff
	if _, err := w.Write(bad); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(); !errors.Is(err, ErrChecksum) {
		t.Fatalf("commit: %v", err)
	}
	if _, err := os.Stat(b.BodyPath(m.ID) + ".part"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("part kept: %v", err)
	}
	w, off, err := b.BeginBody(m.ID)
	if err != nil || off != 0 {
		t.Fatalf("restart: %d %v", off, err)
	}
	if _, err := w.Write(append(raw, 'x')); !errors.Is(err, ErrChecksum) {
		t.Fatalf("overlong write: %v", err)
	}
	_ = w.Close()
	if b.HasBody(m.ID) {
		t.Fatal("bad body accepted")
	}
	copyBody(t, a, b, m.ID)
	if !b.HasBody(m.ID) {
		t.Fatal("good body refused")
	}
}

func TestVerifyCorruptBody(t *testing.T) {
	s := newStore(t, 1)
	m := accept(t, s, message("v", 2048))
	ok := accept(t, s, message("w", 10))
	if bad, err := s.Scrub(t.Context()); err != nil || len(bad) != 0 {
		t.Fatalf("scrub clean: %v %v", bad, err)
	}
	f, err := os.OpenFile(s.BodyPath(m.ID), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = f.WriteAt([]byte("XX"), 100)
	_ = f.Close()
	if bad, err := s.Scrub(t.Context()); err != nil || !reflect.DeepEqual(bad, []string{m.ID}) {
		t.Fatalf("scrub: %v %v", bad, err)
	}
	if err := s.Verify(m.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("verify again: %v", err)
	}
	missing, _ := s.Missing()
	if len(missing) != 1 || missing[0].ID != m.ID {
		t.Fatalf("missing %v", missing)
	}
	if _, _, err := s.OpenBody(m.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("open corrupt: %v", err)
	}
	if err := s.Verify(ok.ID); err != nil {
		t.Fatal(err)
	}
	// A vanished body is corrupt too.
	_ = os.Remove(s.BodyPath(ok.ID))
	if err := s.Verify(ok.ID); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("vanished: %v", err)
	}
}
