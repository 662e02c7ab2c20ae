package mailstore

import (
	"os"
	"path/filepath"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// residentPages returns how many pages of the file at path are in the page cache
// (mincore(2) on a mapping of it).
func residentPages(t *testing.T, path string) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() == 0 {
		return 0
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	pg := os.Getpagesize()
	vec := make([]byte, (len(m)+pg-1)/pg)
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)),
		uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
		t.Fatalf("mincore %s: %v", path, errno)
	}
	n := 0
	for _, v := range vec {
		n += int(v & 1)
	}
	return n
}

// skipUnlessDroppable skips the test where the file system keeps the pages of a clean
// file that is advised away (tmpfs holds them: they are its only copy).
func skipUnlessDroppable(t *testing.T, dir string) {
	t.Helper()
	p := filepath.Join(dir, "probe")
	if err := os.WriteFile(p, make([]byte, 64<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	dropCached(f)
	if n := residentPages(t, p); n > 0 {
		t.Skipf("the file system of %s keeps %d advised-away pages (tmpfs?): nothing to measure", dir, n)
	}
	_ = os.Remove(p)
}

// TestDurableBodiesLeaveThePageCache: a body received from a peer leaves the page cache
// when its commit returns, an accepted one at the journal's checkpoint (Close runs one),
// and both still read back whole.
func TestDurableBodiesLeaveThePageCache(t *testing.T) {
	a, b := newStore(t, 1), newStore(t, 2)
	skipUnlessDroppable(t, a.dir)
	var ids []string
	var raws [][]byte
	for i := range 3 {
		raw := message("cache", 40<<10+i)
		ids = append(ids, accept(t, a, raw).ID)
		raws = append(raws, raw)
	}
	if got := replicate(t, a, b); len(got) != len(ids) {
		t.Fatalf("the replica needs %v, want %v", got, ids)
	}
	for _, id := range ids {
		if n := residentPages(t, a.BodyPath(id)); n == 0 {
			t.Fatalf("accepted body %s has no page cached before the checkpoint: the test cannot tell", id)
		}
		copyBody(t, a, b, id)
		if n := residentPages(t, b.BodyPath(id)); n != 0 {
			t.Errorf("received body %s: %d pages still cached after its commit", id, n)
		}
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if n := residentPages(t, a.BodyPath(id)); n != 0 {
			t.Errorf("accepted body %s: %d pages still cached after the checkpoint", id, n)
		}
	}
	for i, id := range ids {
		if got := readBody(t, b, id); string(got) != string(raws[i]) {
			t.Errorf("received body %s reads back %d bytes, want its %d", id, len(got), len(raws[i]))
		}
	}
}
