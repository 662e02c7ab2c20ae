package mailstore

import (
	"os"
	"sync"
	"sync/atomic"
)

// Bodies carried in the intake journal's records (intake.go), read back from their
// spooled file once received (from the page cache): memory is held only while the
// message waits for its group, never while a client sends it, and all the copies at
// once are bounded by maxInlineBytes. A body that does not fit takes the other way:
// its own fsync, and a record naming its file.

// maxInlineBytes bounds the bodies held for journal records at once, in the whole
// process (an SMTP flood of large messages waits on the disk, not on memory).
const maxInlineBytes = 16 << 20

var inlineBytes atomic.Int64

// inlinePools hold the read-back buffers: one class up to 64 KiB, one up to maxInline.
var inlinePools = [2]sync.Pool{
	{New: func() any { b := make([]byte, 64<<10); return &b }},
	{New: func() any { b := make([]byte, maxInline); return &b }},
}

// inlineBody reads the n-byte body of f back for its record, or returns nil when it
// is larger than maxInline, the budget is spent, or the read fails. done gives the
// buffer and its share of the budget back; it is nil when body is.
func inlineBody(f *os.File, n int64) (body []byte, done func()) {
	if n > maxInline {
		return nil, nil
	}
	if inlineBytes.Add(n) > maxInlineBytes {
		inlineBytes.Add(-n)
		return nil, nil
	}
	class := 0
	if n > 64<<10 {
		class = 1
	}
	bp := inlinePools[class].Get().(*[]byte)
	done = func() {
		inlinePools[class].Put(bp)
		inlineBytes.Add(-n)
	}
	b := (*bp)[:n]
	if _, err := f.ReadAt(b, 0); err != nil {
		done()
		return nil, nil
	}
	return b, done
}
