package mailstore

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// syncFSOf makes everything written to the file system holding f durable: syncfs(2),
// which (Linux 5.8 and later) also reports a writeback error of any file on it that
// happened since f was opened and that no syncfs on f reported yet.
func syncFSOf(f *os.File) error {
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return fmt.Errorf("syncfs %s: %w", f.Name(), err)
	}
	return nil
}

// fdatasync flushes f's data (and the metadata needed to read it back).
func fdatasync(f *os.File) error {
	if err := unix.Fdatasync(int(f.Fd())); err != nil {
		return fmt.Errorf("fdatasync %s: %w", f.Name(), err)
	}
	return nil
}
