package daemon

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestBackupSettings(t *testing.T) {
	base := DefaultConfig()
	base.DataDir, base.IP = t.TempDir(), "127.0.0.1"
	for _, tc := range []struct {
		dir      string
		interval time.Duration
		keep     int
		want     string
	}{
		{"", 0, 0, ""}, // off: the others are not looked at
		{"/var/backups/pmgcm", time.Hour, 3, ""},
		{"backups", time.Hour, 3, "absolute"},
		{"/b", 0, 3, "--backup-interval"},
		{"/b", time.Hour, 0, "--backup-keep"},
	} {
		c := base
		c.BackupDir, c.BackupInterval, c.BackupKeep = tc.dir, tc.interval, tc.keep
		err := c.Validate()
		if (err == nil) != (tc.want == "") || err != nil && !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc, err, tc.want)
		}
	}
	if d := DefaultConfig(); d.BackupInterval != DefaultBackupInterval || d.BackupKeep != DefaultBackupKeep {
		t.Errorf("defaults %s %d", d.BackupInterval, d.BackupKeep)
	}
}

// TestPruneBackups keeps the newest N scheduled backups, removes temporary files a crash
// left a day ago (not one being written), and never touches another file.
func TestPruneBackups(t *testing.T) {
	dir := t.TempDir()
	names := []string{"pmgcm-20261101T000000Z.backup", "pmgcm-20261103T000000Z.backup", "pmgcm-20261102T000000Z.backup",
		"pmgcm-manual.backup", "notes.txt", ".pmgcm-20261104T000000Z.backup.tmp123"}
	for _, n := range names {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	stale := filepath.Join(dir, ".pmgcm-20261001T000000Z.backup.tmp9")
	if err := os.WriteFile(stale, []byte("cut short"), 0o600); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-2 * staleTempAge)
	if err := os.Chtimes(stale, old, old); err != nil {
		t.Fatal(err)
	}
	if err := pruneBackups(dir, 2); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(dir)
	var left []string
	for _, e := range ents {
		left = append(left, e.Name())
	}
	want := []string{".pmgcm-20261104T000000Z.backup.tmp123", "notes.txt", "pmgcm-20261102T000000Z.backup", "pmgcm-20261103T000000Z.backup", "pmgcm-manual.backup"}
	if !slices.Equal(left, want) {
		t.Fatalf("left %v, want %v", left, want)
	}
}
