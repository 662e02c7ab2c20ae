package cli

import (
	"bytes"
	"encoding/json"
	"io"
)

// Lists are printed as streams (issue 16): the commands print each entry as
// client.ConfigListEach and QuarantineListEach decode it.

// jsonArrayWriter prints a JSON array one element at a time, with the bytes writeJSON
// prints for the whole slice (two-space indent, HTML characters unescaped).
type jsonArrayWriter struct {
	w   io.Writer
	n   int
	buf bytes.Buffer
	enc *json.Encoder
}

func newJSONArrayWriter(w io.Writer) *jsonArrayWriter {
	a := &jsonArrayWriter{w: w}
	a.enc = json.NewEncoder(&a.buf)
	a.enc.SetEscapeHTML(false)
	a.enc.SetIndent("  ", "  ")
	return a
}

// add prints v as the next element.
func (a *jsonArrayWriter) add(v any) error {
	a.buf.Reset()
	if a.n == 0 {
		a.buf.WriteString("[\n  ")
	} else {
		a.buf.WriteString(",\n  ")
	}
	if err := a.enc.Encode(v); err != nil {
		return err
	}
	a.n++
	b := a.buf.Bytes()
	_, err := a.w.Write(b[:len(b)-1]) // without Encode's newline
	return err
}

// close ends the array.
func (a *jsonArrayWriter) close() error {
	end := "\n]\n"
	if a.n == 0 {
		end = "[]\n"
	}
	_, err := io.WriteString(a.w, end)
	return err
}
