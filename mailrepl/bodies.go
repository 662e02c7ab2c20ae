package mailrepl

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/pmgcm/pmgcm/mailstore"
)

// Several bodies in one answer (issue 16): GET PathBodies?ids=<id>,<id>,... streams the
// bodies asked for, in the order asked, each after a one-line frame head:
//
//	<id> <size> <sha256>\n<size bytes of the body>
//	<id> -\n                                         (this node does not hold it)
//
// A fetcher asks for the bodies of one events answer at once instead of one request
// each: on a 3-node cluster on one machine the per-request work (the client's request,
// the server's parse and answer) was about a tenth of all the CPU per message. It is a
// wire feature of feature level 2 (release 0.2.0): a Replicator uses it only when
// Config.Bulk says every member serves it; a first-release node answers 404 for the
// path, and the fetcher then asks for each body alone (PathBody). A body that fails the
// serving node's own check on the way out ends the answer there (the connection is cut),
// as in PathBody; the asker fetches what it did not get one by one.
const (
	PathBodies = "/mail/v1/bodies"
	// MaxBulkIDs is the most IDs one request of PathBodies may name.
	MaxBulkIDs = 64
	// maxFrameHead bounds a frame's head line: an ID (two uint64 and a dash), a size
	// and 64 hex digits are far below it.
	maxFrameHead = 160
)

// errFrame means a frame head of a PathBodies answer is malformed.
var errFrame = errors.New("bad frame head")

// frameHead is a decoded frame head: held says the body follows, of size bytes.
type frameHead struct {
	id     string
	held   bool
	size   int64
	sha256 string
}

// readFrameHead reads one frame head from br, at most maxFrameHead bytes. Errors wrap
// ErrPeer (and errFrame for a malformed head); io.ErrUnexpectedEOF when the answer ends
// before it.
func readFrameHead(br *bufio.Reader) (frameHead, error) {
	line, err := br.ReadSlice('\n')
	switch {
	case errors.Is(err, bufio.ErrBufferFull) || len(line) > maxFrameHead:
		return frameHead{}, fmt.Errorf("%w: %w: longer than %d bytes", ErrPeer, errFrame, maxFrameHead)
	case err == io.EOF:
		return frameHead{}, fmt.Errorf("%w: bodies: %w", ErrPeer, io.ErrUnexpectedEOF)
	case err != nil:
		return frameHead{}, fmt.Errorf("%w: bodies: %w", ErrPeer, err)
	}
	return parseFrameHead(string(line[:len(line)-1]))
}

// parseFrameHead decodes a frame head without its newline.
func parseFrameHead(s string) (frameHead, error) {
	bad := func() (frameHead, error) { return frameHead{}, fmt.Errorf("%w: %w: %q", ErrPeer, errFrame, s) }
	f := strings.Split(s, " ")
	if len(f) < 2 {
		return bad()
	}
	if _, _, err := mailstore.ParseID(f[0]); err != nil {
		return bad()
	}
	h := frameHead{id: f[0]}
	if len(f) == 2 && f[1] == "-" {
		return h, nil
	}
	// Only the forms serveFrame writes: a size in decimal without sign or leading zero,
	// and the SHA-256 in lower-case hex, as in the events (Meta.SHA256).
	size, err := strconv.ParseInt(f[1], 10, 64)
	if len(f) != 3 || err != nil || size < 0 || strconv.FormatInt(size, 10) != f[1] || !isLowerHex(f[2], 2*sha256.Size) {
		return bad()
	}
	h.held, h.size, h.sha256 = true, size, f[2]
	return h, nil
}

// isLowerHex says whether s is n lower-case hex digits.
func isLowerHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// bodiesURL is the request URL of PathBodies for ids at a peer at addr ("ip:port").
func bodiesURL(addr string, ids []string) string {
	return "http://" + addr + PathBodies + "?ids=" + strings.Join(ids, ",")
}

// serveBodies answers PathBodies: the bodies named by ids, in that order.
func serveBodies(store *mailstore.Store, w http.ResponseWriter, r *http.Request) {
	// Split no further than one past the bound: a query may be as long as the header
	// limit (1 MiB), and splitting it all would make 16 bytes of string for each comma.
	ids := strings.SplitN(r.URL.Query().Get("ids"), ",", MaxBulkIDs+1)
	if len(ids) > MaxBulkIDs {
		httpError(w, http.StatusBadRequest, "more than %d ids", MaxBulkIDs)
		return
	}
	for _, id := range ids {
		if _, _, err := mailstore.ParseID(id); err != nil {
			httpError(w, http.StatusBadRequest, "%v", err)
			return
		}
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.WriteHeader(http.StatusOK)
	for _, id := range ids {
		if !serveFrame(store, w, id) {
			panic(http.ErrAbortHandler) // make the asker see an answer cut short
		}
	}
}

// serveFrame writes the frame of id; false when the answer must end here (the body
// failed its check, or the store or the asker went away).
func serveFrame(store *mailstore.Store, w io.Writer, id string) bool {
	f, meta, err := store.FeedBody(id)
	if errors.Is(err, mailstore.ErrNotFound) {
		_, err = io.WriteString(w, id+" -\n")
		return err == nil
	}
	if err != nil {
		return false
	}
	defer f.Close()
	if _, err := fmt.Fprintf(w, "%s %d %s\n", id, meta.Size, meta.SHA256); err != nil {
		return false
	}
	// Hashed on the way out, as by serveBody: a body that does not match is verified,
	// moved aside and fetched again from a peer.
	h := sha256.New()
	n, err := io.Copy(w, io.TeeReader(io.LimitReader(f, meta.Size), h))
	if err != nil {
		return false
	}
	if n < meta.Size || hex.EncodeToString(h.Sum(nil)) != meta.SHA256 {
		_ = store.Verify(id)
		return false
	}
	return true
}
