package mailstore

import (
	"os"

	"golang.org/x/sys/unix"
)

// dropCached tells the kernel that the clean cached pages of f will not be needed
// (pagecache.go).
func dropCached(f *os.File) {
	_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
}
