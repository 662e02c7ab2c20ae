package dirsync

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSync(t *testing.T) {
	dir := t.TempDir()
	if err := Sync(dir); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "gone")
	err := Sync(missing)
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), missing) {
		t.Fatalf("Sync of a missing directory: %v, want ErrNotExist naming it", err)
	}
}
