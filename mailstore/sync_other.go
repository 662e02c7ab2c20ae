//go:build !linux

package mailstore

import (
	"os"
	"syscall"
)

// syncFS makes everything written durable: without syncfs(2), sync(2), which waits
// for the writeback on the systems this builds for (it cannot report an error).
func syncFSOf(*os.File) error {
	syscall.Sync()
	return nil
}

// fdatasync flushes f (fsync: no fdatasync everywhere).
func fdatasync(f *os.File) error { return f.Sync() }
