package mailstore

import (
	"bytes"
	"crypto/rand"
	"io"
	"sync/atomic"
	"testing"
	"time"
)

// openStore opens a store in dir whose local CID is *cid.
func openStore(t testing.TB, dir string, cid *atomic.Uint64, now func() time.Time) *Store {
	t.Helper()
	s, err := Open(dir, Options{LocalCID: cid.Load, Timeout: time.Second, Now: now})
	if err != nil {
		t.Fatalf("open %s: %v", dir, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// newStore opens a fresh store with local CID cid.
func newStore(t testing.TB, cid uint64) *Store {
	t.Helper()
	var c atomic.Uint64
	c.Store(cid)
	return openStore(t, t.TempDir(), &c, nil)
}

func message(subject string, size int) []byte {
	body := make([]byte, size)
	_, _ = rand.Read(body)
	return append([]byte("From: a@example.org\r\nSubject: "+subject+"\r\n\r\n"), body...)
}

func accept(t *testing.T, s *Store, raw []byte) Meta {
	t.Helper()
	m, err := s.Accept("a@example.org", []string{"b@example.net", "c@example.com"}, bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("accept: %v", err)
	}
	return m
}

// replicate applies src's events after dst's cursors to dst and returns the
// IDs whose body dst needs.
func replicate(t *testing.T, src, dst *Store) []string {
	t.Helper()
	evs, err := src.EventsSince(dst.Heads(), 0)
	if err != nil {
		t.Fatal(err)
	}
	need, err := dst.ApplyEvents(evs)
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	return need
}

// copyBody streams the body of id from src into dst.
func copyBody(t *testing.T, src, dst *Store, id string) {
	t.Helper()
	f, _, err := src.OpenBody(id)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w, off, err := dst.BeginBody(id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(w, f); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(); err != nil {
		t.Fatalf("commit: %v", err)
	}
}

func readBody(t *testing.T, s *Store, id string) []byte {
	t.Helper()
	f, _, err := s.OpenBody(id)
	if err != nil {
		t.Fatalf("open body %s: %v", id, err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
