package daemon

import (
	"errors"
	"fmt"
	"io"
	"os"
)

// Bounds of the data directory's small files, read whole at start and on identity
// changes: a file over its bound is damaged (or not ours), and reading it whole would
// take memory without limit.
const (
	// maxNodeFileBytes bounds node.json (a few hundred bytes).
	maxNodeFileBytes = 1 << 20
	// maxPeersFileBytes bounds peers.json and mail-policy.json: the member list of a
	// large cluster, the intake settings.
	maxPeersFileBytes = 16 << 20
	// maxTLSFileBytes bounds the node key, certificate and CA certificate files (one PEM
	// block of a few kilobytes each).
	maxTLSFileBytes = 64 << 10
)

// errFileTooLarge means a data file is over its bound.
var errFileTooLarge = errors.New("file is larger than it can be")

// readFileBounded reads the file at path, of at most max bytes. A missing file gives
// an error matching os.ErrNotExist; one over max an error wrapping errFileTooLarge.
func readFileBounded(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%w: %s is over %d bytes", errFileTooLarge, path, max)
	}
	return b, nil
}

// readErr is the error of a data file that could not be read: corrupt when it is over
// its bound, unusable otherwise (permissions, I/O).
func readErr(path string, err error) error {
	if errors.Is(err, errFileTooLarge) {
		return corrupt(path, err)
	}
	return unusable(path, err)
}
