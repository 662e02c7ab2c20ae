// Package dirsync makes the entries of a directory durable: after a file is created,
// renamed or removed in it, the change survives a crash only once the directory itself
// is synced (fsync on the directory), as the file's own fsync covers its data, not its
// name.
//
// Package dirsync imports the standard library only; it must never import another
// pmgcm package, so that every package that writes files (daemon, raftnode, mailstore)
// can use it.
package dirsync

import (
	"fmt"
	"os"
)

// Sync fsyncs the directory dir. The error names the directory and says which step
// failed.
func Sync(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}
