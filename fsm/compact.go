package fsm

// ownValue returns the value to keep in the state for v: never nil, and in an allocation
// of its own length. A value decoded from JSON (a command or a snapshot line) sits in a
// buffer of base64.DecodedLen bytes, up to 2 more than its length, and a buffer one byte
// over a size class takes the next class: a 1,024-byte value kept as decoded holds 1,152
// bytes, 12% more than the data, for as long as the entry lives. The copy is made once per
// applied write, and only when the buffer is longer than the value.
func ownValue(v []byte) []byte {
	if v == nil {
		return []byte{}
	}
	if cap(v) == len(v) {
		return v
	}
	return append(make([]byte, 0, len(v)), v...)
}
