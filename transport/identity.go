package transport

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
)

// Identity is what this node presents and trusts: its key and certificate
// and, once in a cluster, the cluster CA pool. An Identity is immutable once
// made; rotate by making a new one and calling Mux.SetIdentity.
type Identity struct {
	// Cert is the key pair presented in TLS handshakes.
	Cert tls.Certificate
	// Leaf is the parsed node certificate.
	Leaf *x509.Certificate
	// Fingerprint is Fingerprint(Leaf.Raw).
	Fingerprint string
	// CAs is the cluster CA pool, nil when the node is standalone.
	CAs *x509.CertPool
}

// NewIdentity builds an Identity from a PEM certificate, its PEM private key,
// and optionally the PEM cluster CA certificate(s) (nil or empty when
// standalone). With a CA, the certificate must chain to it.
func NewIdentity(certPEM, keyPEM, caPEM []byte) (*Identity, error) {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("transport: identity: %w", err)
	}
	leaf := pair.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return nil, fmt.Errorf("transport: identity: %w", err)
		}
		pair.Leaf = leaf
	}
	id := &Identity{Cert: pair, Leaf: leaf, Fingerprint: Fingerprint(leaf.Raw)}
	if len(caPEM) == 0 {
		return id, nil
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("transport: identity: no CA certificate in CA PEM")
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots:         pool,
		Intermediates: intermediatesOf(pair.Certificate),
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return nil, fmt.Errorf("transport: identity: certificate %q does not chain to the cluster CA: %w",
			leaf.Subject.CommonName, err)
	}
	id.CAs = pool
	return id, nil
}

// Standalone reports whether the identity has no cluster CA.
func (id *Identity) Standalone() bool { return id.CAs == nil }

// intermediatesOf returns a pool of the certificates after the leaf in a DER
// chain, or nil when there are none.
func intermediatesOf(chain [][]byte) *x509.CertPool {
	if len(chain) < 2 {
		return nil
	}
	pool := x509.NewCertPool()
	for _, der := range chain[1:] {
		if c, err := x509.ParseCertificate(der); err == nil {
			pool.AddCert(c)
		}
	}
	return pool
}

// verifyPeer checks that the peer's certificate chain (leaf first) chains to
// the identity's CA pool for the given key usage, and returns the leaf's
// fingerprint.
func (id *Identity) verifyPeer(certs []*x509.Certificate, usage x509.ExtKeyUsage) (string, error) {
	if len(certs) == 0 {
		return "", fmt.Errorf("%w: no certificate presented", ErrPeerRefused)
	}
	leaf := certs[0]
	fp := Fingerprint(leaf.Raw)
	if id.CAs == nil {
		return fp, fmt.Errorf("%w: certificate %s presented to a standalone node", ErrPeerRefused, fp)
	}
	var inter *x509.CertPool
	if len(certs) > 1 {
		inter = x509.NewCertPool()
		for _, c := range certs[1:] {
			inter.AddCert(c)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots:         id.CAs,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{usage},
	}); err != nil {
		return fp, fmt.Errorf("%w: certificate %q (%s) is not from the cluster CA: %w",
			ErrPeerRefused, leaf.Subject.CommonName, fp, err)
	}
	return fp, nil
}
