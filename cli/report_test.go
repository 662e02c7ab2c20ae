package cli

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// reportFake serves a canned bundle.
type reportFake struct {
	*fakeAPI
	data []byte
}

func (f reportFake) Report(context.Context) (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(f.data)), nil
}

func testBundle(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for name, body := range map[string]string{
		"r/README.txt":                       "x",
		"r/status.json":                      "{}",
		"r/nodes/node1-cid1/report.json":     "{}",
		"r/nodes/node1-cid1/log.txt":         "log",
		"r/nodes/node2-cid2/unavailable.txt": "not available (older version)\n",
	} {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body))}); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(body))
	}
	tw.Close()
	zw.Close()
	return buf.Bytes()
}

func TestReportWritesBundle(t *testing.T) {
	path := filepath.Join(t.TempDir(), "r.tar.gz")
	data := testBundle(t)
	r := runFake(t, reportFake{fakeAPI: &fakeAPI{}, data: data}, "", "report", path)
	if r.code != ExitOK {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	got, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("file: %d bytes, %v; want the bundle", len(got), err)
	}
	for _, want := range []string{"report written to " + path, "5 files", "node1-cid1: collected", "node2-cid2: not available (older version)"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
		}
	}
}

func TestReportTruncatedIsNotWritten(t *testing.T) {
	path := filepath.Join(t.TempDir(), "r.tar.gz")
	data := testBundle(t)
	r := runFake(t, reportFake{fakeAPI: &fakeAPI{}, data: data[:len(data)/2]}, "", "report", path)
	if r.code != ExitError || !strings.Contains(r.stderr, "not written") {
		t.Fatalf("exit %d, stderr %q; want a refusal", r.code, r.stderr)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("a truncated report left %s: %v", path, err)
	}
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 0 {
		t.Fatalf("temporary files left: %v", entries)
	}
}

// TestReportInCompletionAndHelp: the shell completion offers report, and the command
// list names it.
func TestReportInCompletionAndHelp(t *testing.T) {
	r := runFake(t, &fakeAPI{}, "", "__complete", "")
	if !strings.Contains(r.stdout, "report\t") {
		t.Errorf("completion of the commands lacks report:\n%s", r.stdout)
	}
	r = runFake(t, &fakeAPI{}, "", "--help")
	if !strings.Contains(r.stdout, "report") || !strings.Contains(r.stdout, "diagnostics bundle") {
		t.Errorf("help lacks report:\n%s", r.stdout)
	}
}
