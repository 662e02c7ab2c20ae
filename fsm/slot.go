package fsm

import (
	"bytes"
	"fmt"
)

// slot is an entry of the state, in 24 bytes (issue 16: a node's memory follows its
// number of keys once the values are spilled, so the bytes per key count): its version,
// and its value either in the heap (val, never nil then) or in the state's segment (pos:
// the offset shifted left by lenBits, or'ed with the length).
type slot struct {
	version uint64
	pos     uint64
	val     *heapValue
}

// heapValue is a value kept in the heap; it is never modified in place.
type heapValue struct{ b []byte }

// lenBits is the bits of a spilled value's length in slot.pos: MaxValueLen (1 MiB) fits.
const lenBits = 21

// maxSpillOffset is the end no spilled value may pass: the offsets slot.pos can hold.
const maxSpillOffset = 1<<(64-lenBits) - 1

// heapSlot is the slot of v kept in the heap: never nil, in an allocation of its own
// length (ownValue).
func heapSlot(version uint64, v []byte) slot {
	return slot{version: version, val: &heapValue{b: ownValue(v)}}
}

// diskSlot is the slot of a value of n bytes at off in the state's segment; put keeps n
// within MaxValueLen and off within maxSpillOffset.
func diskSlot(version uint64, off int64, n int) slot {
	return slot{version: version, pos: uint64(off)<<lenBits | uint64(n)}
}

// spilled reports whether the value is in the segment.
func (s slot) spilled() bool { return s.val == nil }

// off and n are a spilled value's place.
func (s slot) off() int64 { return int64(s.pos >> lenBits) }

func (s slot) n() uint32 { return uint32(s.pos & (1<<lenBits - 1)) }

// size is the value's length.
func (s slot) size() int64 {
	if s.spilled() {
		return int64(s.n())
	}
	return int64(len(s.val.b))
}

// value returns the value: shared when in the heap (never modified in place), else
// read from seg into buf's start (grown if short).
func (s slot) value(seg *segment, buf []byte) ([]byte, error) {
	if !s.spilled() {
		return s.val.b, nil
	}
	if seg == nil {
		return nil, fmt.Errorf("%w: its spill file is closed", ErrValueUnreadable)
	}
	return seg.read(buf, s.off(), s.n())
}

// copyOf returns a copy of the value that the caller owns.
func (s slot) copyOf(seg *segment) ([]byte, error) {
	v, err := s.value(seg, nil)
	if err == nil && !s.spilled() {
		v = bytes.Clone(v)
	}
	return v, err
}
