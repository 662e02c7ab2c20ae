package daemon

import (
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestExportReadRefusesFIFO: a service that can write in the export directory puts a
// named pipe where the manifest is. Opening it for reading would block until a writer
// comes, forever: the exporter would never start and the daemon's Close, which waits
// for it, would hang. readFile refuses anything but a regular file, at once.
func TestExportReadRefusesFIFO(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, manifestName)
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	x, err := openExportDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	done := make(chan error, 1)
	go func() {
		_, err := x.readFile(manifestName, maxManifest)
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("a named pipe was read as the manifest")
		}
		t.Logf("refused: %v", err)
	case <-time.After(3 * time.Second):
		// Unblock the open (a writer arrives), so that the goroutine ends.
		if fd, err := unix.Open(fifo, unix.O_WRONLY|unix.O_NONBLOCK, 0); err == nil {
			_ = unix.Close(fd)
		}
		t.Fatal("readFile blocked on a named pipe at the manifest's path")
	}
}
