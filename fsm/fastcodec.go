package fsm

import (
	"bytes"
	"encoding/base64"
	"strconv"
)

// The hot command, ConfigSet, has a direct encoder and decoder (issue 16: encoding/json
// was most of the state machine's cost per write). They change nothing on the wire:
// encodeConfigSet writes the very bytes json.Marshal writes, and decodeConfigSet accepts
// only that canonical form, giving what encoding/json gives for it; any other input
// (escapes, whitespace, other field order, null, unknown fields) takes the encoding/json
// path, whose result and errors are those of every other node, old or new. Both are
// checked against encoding/json by TestConfigSetFastCodec and FuzzConfigSetFastDecode.

// plainKeyByte reports whether json.Marshal writes byte c of a string as itself: printable
// ASCII other than '"', '\\' and the HTML characters it escapes ('<', '>', '&').
func plainKeyByte(c byte) bool {
	return c >= ' ' && c <= '~' && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
}

// encodeConfigSet returns the encoded command (header and body) of c, and false when
// c's key has a byte json.Marshal would escape (the caller then uses encoding/json).
func encodeConfigSet(c *ConfigSet) ([]byte, bool) {
	for i := 0; i < len(c.Key); i++ {
		if !plainKeyByte(c.Key[i]) {
			return nil, false
		}
	}
	n := 2 + len(`{"key":"","value":""`) + len(c.Key) + base64.StdEncoding.EncodedLen(len(c.Value)) + 1
	if c.IfVersion != nil {
		n += len(`,"if_version":`) + 20
	}
	out := make([]byte, 0, n)
	out = append(out, EncodingVersion, byte(TypeConfigSet))
	out = append(out, `{"key":"`...)
	out = append(out, c.Key...)
	out = append(out, `","value":`...)
	if c.Value == nil {
		out = append(out, "null"...)
	} else {
		out = append(out, '"')
		out = base64.StdEncoding.AppendEncode(out, c.Value)
		out = append(out, '"')
	}
	if c.IfVersion != nil {
		out = append(out, `,"if_version":`...)
		out = strconv.AppendUint(out, *c.IfVersion, 10)
	}
	return append(out, '}'), true
}

// decodeConfigSet decodes body, a ConfigSet's JSON body, if it is in the canonical form
// encodeConfigSet writes with a non-nil value; false sends the caller to encoding/json.
func decodeConfigSet(body []byte) (ConfigSet, bool) {
	var c ConfigSet
	rest, ok := cutPrefix(body, `{"key":"`)
	if !ok {
		return c, false
	}
	i := 0
	for i < len(rest) && rest[i] != '"' {
		if !plainKeyByte(rest[i]) {
			return c, false
		}
		i++
	}
	if i == len(rest) {
		return c, false
	}
	key := rest[:i]
	if rest, ok = cutPrefix(rest[i:], `","value":"`); !ok {
		return c, false
	}
	i = 0
	for i < len(rest) && rest[i] != '"' {
		if !base64Byte(rest[i]) {
			return c, false
		}
		i++
	}
	if i == len(rest) {
		return c, false
	}
	enc := rest[:i]
	// A canonical value: whole quanta, padding only at the end. It is decoded into a
	// buffer of exactly its length (encoding/json's is up to 2 bytes longer), so that the
	// state keeps it without a copy.
	if len(enc)%4 != 0 {
		return c, false // encoding/json gives the error
	}
	pad := 0
	for pad < 2 && pad < len(enc) && enc[len(enc)-1-pad] == '=' {
		pad++
	}
	if bytes.IndexByte(enc[:len(enc)-pad], '=') >= 0 {
		return c, false
	}
	value := make([]byte, len(enc)/4*3-pad)
	n, err := base64.StdEncoding.Decode(value, enc)
	if err != nil || n != len(value) {
		return c, false // encoding/json gives the error
	}
	rest = rest[i+1:]
	if r, ok := cutPrefix(rest, `,"if_version":`); ok {
		j := 0
		for j < len(r) && r[j] >= '0' && r[j] <= '9' {
			j++
		}
		if j == 0 || (j > 1 && r[0] == '0') {
			return c, false
		}
		v, err := strconv.ParseUint(string(r[:j]), 10, 64)
		if err != nil {
			return c, false // out of range: encoding/json gives the error
		}
		c.IfVersion = &v
		rest = r[j:]
	}
	if len(rest) != 1 || rest[0] != '}' {
		return c, false
	}
	c.Key = string(key)
	c.Value = value[:n]
	return c, true
}

// base64Byte reports whether c is of the standard base64 alphabet or its padding.
func base64Byte(c byte) bool {
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/' || c == '='
}

func cutPrefix(b []byte, prefix string) ([]byte, bool) {
	if len(b) < len(prefix) || string(b[:len(prefix)]) != prefix {
		return b, false
	}
	return b[len(prefix):], true
}
