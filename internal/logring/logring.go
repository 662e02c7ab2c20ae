// Package logring keeps the last lines of a log in memory, bounded in lines and bytes,
// for diagnostics bundles (pmgcm report). A Ring is an io.Writer: the daemon's hclog
// logger writes into it beside stderr.
//
// It owns only the ring. It must never import any other package of this project.
package logring

import (
	"bytes"
	"sync"
)

// Defaults of New when given zero limits.
const (
	DefaultMaxLines = 4000
	DefaultMaxBytes = 2 << 20
)

// Ring is a bounded, concurrency-safe buffer of the last complete log lines written to
// it. A line longer than a quarter of the byte limit is cut to it. Write never fails and
// never blocks on I/O.
type Ring struct {
	mu       sync.Mutex
	maxLines int
	maxBytes int
	lines    [][]byte // oldest first, from head
	head     int
	size     int    // bytes held in lines
	partial  []byte // a line not yet ended by '\n'
	dropped  uint64 // lines pushed out since New
}

// New returns a Ring that keeps at most maxLines lines and maxBytes bytes (zero: the
// defaults).
func New(maxLines, maxBytes int) *Ring {
	if maxLines <= 0 {
		maxLines = DefaultMaxLines
	}
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBytes
	}
	return &Ring{maxLines: maxLines, maxBytes: maxBytes}
}

// Write adds the complete lines of p; a trailing part without '\n' waits for the rest.
func (r *Ring) Write(p []byte) (int, error) {
	n := len(p)
	r.mu.Lock()
	defer r.mu.Unlock()
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			r.partial = append(r.partial, p...)
			if len(r.partial) > r.lineLimit() {
				r.push(r.partial)
				r.partial = nil
			}
			break
		}
		line := p[:i+1]
		if len(r.partial) > 0 {
			line = append(r.partial, line...)
			r.partial = nil
		}
		r.push(line)
		p = p[i+1:]
	}
	return n, nil
}

func (r *Ring) lineLimit() int { return max(r.maxBytes/4, 1) }

// push stores a copy of line, cut to the line limit, and drops the oldest lines over
// the limits.
func (r *Ring) push(line []byte) {
	if lim := r.lineLimit(); len(line) > lim {
		line = append(line[:lim-1:lim-1], '\n')
	}
	c := append([]byte(nil), line...)
	r.lines = append(r.lines, c)
	r.size += len(c)
	for len(r.lines)-r.head > r.maxLines || r.size > r.maxBytes {
		r.size -= len(r.lines[r.head])
		r.lines[r.head] = nil
		r.head++
		r.dropped++
	}
	// Reclaim the dropped slots now and then, so that the slice does not grow forever.
	if r.head > r.maxLines {
		r.lines = append([][]byte(nil), r.lines[r.head:]...)
		r.head = 0
	}
}

// Bytes returns a copy of the lines held, oldest first.
func (r *Ring) Bytes() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]byte, 0, r.size)
	for _, l := range r.lines[r.head:] {
		out = append(out, l...)
	}
	return out
}

// Len returns the number of lines held.
func (r *Ring) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.lines) - r.head
}

// Dropped returns how many lines were pushed out of the ring since New.
func (r *Ring) Dropped() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.dropped
}
