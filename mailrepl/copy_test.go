package mailrepl

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

// chunkReader returns at most n bytes per read, then err (io.EOF for a clean end).
type chunkReader struct {
	data []byte
	n    int
	err  error
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, c.err
	}
	k := copy(p[:min(len(p), c.n)], c.data)
	c.data = c.data[k:]
	return k, nil
}

// countWriter counts its writes.
type countWriter struct {
	bytes.Buffer
	writes int
}

func (w *countWriter) Write(p []byte) (int, error) { w.writes++; return w.Buffer.Write(p) }

// copyFull writes whole buffers (one write for a body that fits), copies everything up
// to a clean end, and on a broken read writes what came before it and returns its error.
func TestCopyFull(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 1280) // 20 KiB
	for _, tc := range []struct {
		name    string
		src     io.Reader
		buf     int
		want    []byte
		writes  int
		wantErr error
	}{
		{"one write for 20 KiB in 16 KiB reads", &chunkReader{data: data, n: 16 << 10, err: io.EOF}, 32 << 10, data, 1, nil},
		{"buffers filled", &chunkReader{data: data, n: 1000, err: io.EOF}, 8 << 10, data, 3, nil},
		{"exact multiple", &chunkReader{data: data[:16<<10], n: 4096, err: io.EOF}, 8 << 10, data[:16<<10], 2, nil},
		{"empty", &chunkReader{err: io.EOF}, 1024, nil, 0, nil},
		{"broken after 5000 bytes", &chunkReader{data: data[:5000], n: 1500, err: io.ErrUnexpectedEOF}, 32 << 10, data[:5000], 1, io.ErrUnexpectedEOF},
		{"error with data", iotest.TimeoutReader(&chunkReader{data: data, n: 16 << 10, err: io.EOF}), 32 << 10, data[:16<<10], 1, iotest.ErrTimeout},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var w countWriter
			n, err := copyFull(&w, tc.src, make([]byte, tc.buf))
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err %v, want %v", err, tc.wantErr)
			}
			if n != int64(len(tc.want)) || !bytes.Equal(w.Bytes(), tc.want) {
				t.Fatalf("copied %d bytes (%d written), want %d", n, w.Len(), len(tc.want))
			}
			if w.writes != tc.writes {
				t.Fatalf("%d writes, want %d", w.writes, tc.writes)
			}
		})
	}
}
