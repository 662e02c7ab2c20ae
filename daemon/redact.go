package daemon

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"regexp"
	"sort"
	"strings"
)

// redacted replaces a secret in a diagnostics bundle.
const redacted = "[REDACTED]"

// privateKeyPEM matches a PEM private key block, also with its newlines escaped (JSON).
var privateKeyPEM = regexp.MustCompile(`-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----(?s:.*?)-----END [A-Z0-9 ]*PRIVATE KEY-----`)

// redactor removes this node's secrets from text: the node's private key, the cluster
// CA key, the join token, its salt and hash, in the forms they could be written in
// (raw, hex, base64, each line of a PEM), and any PEM private key block at all.
type redactor struct {
	secrets [][]byte // longest first
}

// minSecretLen keeps short strings (that would match by chance) out of the list.
const minSecretLen = 12

// redactor collects this node's secrets as it holds them now.
func (d *Daemon) redactor() *redactor {
	var raw [][]byte
	var pems [][]byte
	if cl := d.fsm.Cluster(); cl != nil {
		pems = append(pems, cl.CAKeyPEM)
		raw = append(raw, cl.JoinTokenSalt, cl.JoinTokenHash)
		if len(cl.CAKeyPEM) > 0 && len(cl.JoinTokenSalt) > 0 {
			raw = append(raw, []byte(joinToken(cl.CAKeyPEM, cl.JoinTokenSalt)))
		}
	}
	if d.dir != nil {
		if k, err := d.dir.keyPEM(); err == nil {
			pems = append(pems, k)
		}
	}
	return newRedactor(raw, pems)
}

// newRedactor makes a redactor of the raw secrets (in every encoding) and of the PEM
// blocks (whole, and line by line).
func newRedactor(raw, pems [][]byte) *redactor {
	seen := map[string]bool{}
	r := &redactor{}
	addOne := func(s []byte) {
		if len(s) >= minSecretLen && !seen[string(s)] {
			seen[string(s)] = true
			r.secrets = append(r.secrets, bytes.Clone(s))
		}
	}
	add := func(s []byte) {
		if len(s) == 0 {
			return
		}
		addOne(s)
		addOne([]byte(hex.EncodeToString(s)))
		addOne([]byte(strings.ToUpper(hex.EncodeToString(s))))
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
			addOne([]byte(enc.EncodeToString(s)))
		}
	}
	for _, s := range raw {
		add(s)
	}
	for _, p := range pems {
		add(p)
		for _, line := range strings.Split(string(p), "\n") {
			line = strings.TrimSpace(line)
			if !strings.HasPrefix(line, "-----") {
				addOne([]byte(line))
			}
		}
	}
	sort.Slice(r.secrets, func(a, b int) bool { return len(r.secrets[a]) > len(r.secrets[b]) })
	return r
}

// bytes returns b without the secrets.
func (r *redactor) bytes(b []byte) []byte {
	b = privateKeyPEM.ReplaceAll(b, []byte("[PRIVATE KEY REDACTED]"))
	for _, s := range r.secrets {
		if bytes.Contains(b, s) {
			b = bytes.ReplaceAll(b, s, []byte(redacted))
		}
	}
	return b
}

// text returns s without the secrets.
func (r *redactor) text(s string) string { return string(r.bytes([]byte(s))) }
