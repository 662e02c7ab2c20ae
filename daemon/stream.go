package daemon

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/http"
)

// unencodable is an item that could not be had (a value that cannot be read): its
// encoding fails, which ends a streamJSON answer short.
type unencodable struct{ err error }

func (u unencodable) MarshalJSON() ([]byte, error) { return nil, u.err }

// streamFlushBytes is how much encoded answer a streaming handler buffers before it
// writes it out.
const streamFlushBytes = 32 << 10

// streamJSON answers 200 with head, the n items that item(i) returns encoded one by one
// and separated by commas, then tail and a newline: the bytes that json.Encoder would
// write for the whole value, without ever holding more than one item and a buffer of its
// encoding. A failed write (the client went away) ends it.
func streamJSON(w http.ResponseWriter, head, tail string, n int, item func(i int) any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	bw := bufio.NewWriterSize(w, streamFlushBytes)
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	if _, err := bw.WriteString(head); err != nil {
		return
	}
	for i := 0; i < n; i++ {
		buf.Reset()
		if i > 0 {
			buf.WriteByte(',')
		}
		if err := enc.Encode(item(i)); err != nil {
			// An unencodable item (or a value that cannot be JSON, never ours): end the
			// answer short so that the client's decoder reports it instead of taking a part.
			return
		}
		b := buf.Bytes()
		if _, err := bw.Write(b[:len(b)-1]); err != nil { // without Encode's newline
			return
		}
	}
	if _, err := bw.WriteString(tail + "\n"); err != nil {
		return
	}
	_ = bw.Flush()
}
