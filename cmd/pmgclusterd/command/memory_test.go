package command

import (
	"bytes"
	"strings"
	"testing"
)

// TestMemoryHeadroomOutOfRange: a --memory-headroom outside 0..MaxHeadroom stops the
// daemon before it starts, with an error that names the flag and the range.
func TestMemoryHeadroomOutOfRange(t *testing.T) {
	for _, v := range []string{"-1", "101"} {
		var out, errb bytes.Buffer
		code := Run([]string{"--data-dir", t.TempDir(), "--ip", "127.0.0.1", "--memory-headroom", v}, &out, &errb)
		if code == 0 || !strings.Contains(errb.String(), "--memory-headroom") || !strings.Contains(errb.String(), "use 0 (off) to") {
			t.Errorf("--memory-headroom %s: exit %d, stderr %q; want a refusal naming the flag and the range", v, code, errb.String())
		}
	}
}
