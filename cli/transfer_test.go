package cli

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/backup"
)

// backupFake is a fakeAPI that streams backups: Backup answers data in small chunks,
// Restore reads what it is sent into got.
type backupFake struct {
	*fakeAPI
	data []byte
	got  []byte
}

func (f *backupFake) Backup(context.Context, bool) (io.ReadCloser, error) {
	f.record("backup")
	return io.NopCloser(&chunkReader{r: bytes.NewReader(f.data), max: 4096}), nil
}

func (f *backupFake) Restore(_ context.Context, r io.Reader) (*api.RestoreResponse, error) {
	f.record("restore")
	var err error
	f.got, err = io.ReadAll(r)
	return &api.RestoreResponse{ClusterID: "c0ffee", Index: 42, Entries: 3}, err
}

// chunkReader reads at most max bytes at a time, like a socket.
type chunkReader struct {
	r   io.Reader
	max int
}

func (c *chunkReader) Read(b []byte) (int, error) { return c.r.Read(b[:min(len(b), c.max)]) }

// backupData returns a valid backup of three entries, about 300 KiB.
func backupData(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := backup.NewWriter(&buf, backup.Header{ClusterID: "c0ffee", Index: 42, Entries: 3})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := w.WriteEntry(backup.Entry{Key: fmt.Sprintf("k%d", i), Value: bytes.Repeat([]byte{'x'}, 100<<10), Version: uint64(i + 1)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

const backupSummary = "backup of cluster c0ffee at index 42: 3 entries, 0 messages written to %s\n"

func TestBackupProgressOnTerminal(t *testing.T) {
	data := backupData(t)
	f := &backupFake{fakeAPI: &fakeAPI{}, data: data}
	path := filepath.Join(t.TempDir(), "b.backup")
	r := runEnv(t, context.Background(), env{stderrTTY: true}, f, "backup", path)
	if r.code != ExitOK || r.stdout != "" {
		t.Fatalf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	// One line rewritten in place, ending at the whole size, then the summary on a line
	// of its own.
	final := "\rbackup: " + formatBytes(int64(len(data))) + " received"
	want := final + "\n" + fmt.Sprintf(backupSummary, path)
	if !strings.HasPrefix(r.stderr, "\rbackup: ") || !strings.HasSuffix(r.stderr, want) {
		t.Errorf("stderr %q, want it to end with %q", r.stderr, want)
	}
	if strings.Count(r.stderr, "\n") != 2 {
		t.Errorf("stderr has %d lines, want the progress line and the summary: %q", strings.Count(r.stderr, "\n"), r.stderr)
	}
	if got, _ := os.ReadFile(path); !bytes.Equal(got, data) {
		t.Error("backup file differs from what the daemon sent")
	}

	// To stdout: the data alone on stdout, the progress on stderr.
	r = runEnv(t, context.Background(), env{stderrTTY: true}, f, "backup", "-")
	if r.code != ExitOK || r.stdout != string(data) || !strings.HasSuffix(r.stderr, final+"\n") || strings.Count(r.stderr, "\n") != 1 {
		t.Errorf("backup -: exit %d, %d bytes out, stderr %q", r.code, len(r.stdout), r.stderr)
	}
}

func TestBackupQuietOffTerminal(t *testing.T) {
	f := &backupFake{fakeAPI: &fakeAPI{}, data: backupData(t)}
	path := filepath.Join(t.TempDir(), "b.backup")
	r := runEnv(t, context.Background(), env{}, f, "backup", path)
	if r.code != ExitOK || r.stdout != "" || r.stderr != fmt.Sprintf(backupSummary, path) {
		t.Errorf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	// A terminal on stdin or stdout alone does not make stderr one.
	r = runEnv(t, context.Background(), env{term: &fakeTerm{}, stdoutTTY: true}, f, "backup", path)
	if r.code != ExitOK || r.stderr != fmt.Sprintf(backupSummary, path) {
		t.Errorf("stdout on a terminal: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestRestoreProgress(t *testing.T) {
	data := backupData(t)
	path := filepath.Join(t.TempDir(), "b.backup")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	const summary = "restored 3 entries and 0 messages from cluster c0ffee (index 42)\nnext: pmgcm create, then join the other nodes\n"
	size := formatBytes(int64(len(data)))

	f := &backupFake{fakeAPI: &fakeAPI{}}
	r := runEnv(t, context.Background(), env{stderrTTY: true}, f, "restore", path)
	if r.code != ExitOK || r.stdout != summary || !bytes.Equal(f.got, data) {
		t.Fatalf("exit %d, stdout %q, stderr %q, %d bytes sent", r.code, r.stdout, r.stderr, len(f.got))
	}
	// The check of the file, then the sending, each on a line of its own that ends whole.
	lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
	if len(lines) != 2 ||
		!strings.HasSuffix(lines[0], "\rrestore: checking "+size+" of "+size+" (100%)") ||
		!strings.HasSuffix(lines[1], "\rrestore: "+size+" of "+size+" (100%) sent") {
		t.Errorf("stderr %q", r.stderr)
	}

	f = &backupFake{fakeAPI: &fakeAPI{}}
	r = runEnv(t, context.Background(), env{}, f, "restore", path)
	if r.code != ExitOK || r.stdout != summary || r.stderr != "" || !bytes.Equal(f.got, data) {
		t.Errorf("off a terminal: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}

	// A bad file is refused after its check, whose line ends before the error.
	bad := filepath.Join(t.TempDir(), "bad.backup")
	if err := os.WriteFile(bad, data[:len(data)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	f = &backupFake{fakeAPI: &fakeAPI{}}
	r = runEnv(t, context.Background(), env{stderrTTY: true}, f, "restore", bad)
	if r.code != ExitError || f.got != nil || !strings.Contains(r.stderr, "(100%)\npmgcm: "+bad+": ") {
		t.Errorf("bad file: exit %d, stderr %q, calls %v", r.code, r.stderr, f.calls)
	}
}

func TestFormatBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB",
		5 << 20: "5.0 MiB", 3 << 30: "3.0 GiB", 2 << 40: "2.0 TiB"} {
		if got := formatBytes(n); got != want {
			t.Errorf("formatBytes(%d) = %q, want %q", n, got, want)
		}
	}
}
