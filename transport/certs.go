package transport

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"strings"
	"time"
)

const (
	// caValidity is how long a cluster CA certificate is valid.
	caValidity = 10 * 365 * 24 * time.Hour
	// selfSignedValidity is how long a standalone node's certificate is
	// valid. It is only ever trusted by pinning its fingerprint.
	selfSignedValidity = 10 * 365 * 24 * time.Hour
	// backdate is subtracted from NotBefore so that modest clock skew between
	// nodes does not make a freshly issued certificate "not yet valid".
	backdate = time.Hour

	pemCert = "CERTIFICATE"
	pemKey  = "PRIVATE KEY"
)

// CA is the cluster certificate authority made at `pmgcm create`.
type CA struct {
	Cert    *x509.Certificate
	Key     crypto.Signer
	CertPEM []byte
	KeyPEM  []byte
}

// NewCA makes a self-signed ECDSA P-256 cluster CA valid for 10 years, with
// the common name "pmgcm cluster CA <clusterID>".
func NewCA(clusterID string) (*CA, error) {
	if clusterID == "" {
		return nil, errors.New("transport: new CA: empty cluster ID")
	}
	key, keyPEM, err := NewKey()
	if err != nil {
		return nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "pmgcm cluster CA " + clusterID},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("transport: new CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("transport: new CA: %w", err)
	}
	return &CA{Cert: cert, Key: key, CertPEM: encodePEM(pemCert, der), KeyPEM: keyPEM}, nil
}

// ParseCA parses a CA certificate and its private key from PEM, checking that
// the certificate is a CA and that the key belongs to it.
func ParseCA(certPEM, keyPEM []byte) (*CA, error) {
	cert, err := parseCertPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("transport: parse CA: %w", err)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("transport: parse CA: certificate %q is not a CA", cert.Subject.CommonName)
	}
	key, err := ParseKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("transport: parse CA: %w", err)
	}
	if !publicKeysEqual(cert.PublicKey, key.Public()) {
		return nil, errors.New("transport: parse CA: private key does not match certificate")
	}
	return &CA{
		Cert:    cert,
		Key:     key,
		CertPEM: append([]byte(nil), certPEM...),
		KeyPEM:  append([]byte(nil), keyPEM...),
	}, nil
}

// NewKey makes an ECDSA P-256 private key and returns it with its PKCS#8 PEM
// encoding ("PRIVATE KEY").
func NewKey() (key crypto.Signer, keyPEM []byte, err error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("transport: new key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, nil, fmt.Errorf("transport: new key: %w", err)
	}
	return k, encodePEM(pemKey, der), nil
}

// ParseKey parses a private key from PEM: PKCS#8 ("PRIVATE KEY") or SEC 1
// ("EC PRIVATE KEY").
func ParseKey(keyPEM []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(keyPEM)
	if block == nil {
		return nil, errors.New("transport: parse key: no PEM block")
	}
	switch block.Type {
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("transport: parse key: %w", err)
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("transport: parse key: %T is not a signing key", k)
		}
		return s, nil
	case "EC PRIVATE KEY":
		k, err := x509.ParseECPrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("transport: parse key: %w", err)
		}
		return k, nil
	default:
		return nil, fmt.Errorf("transport: parse key: unsupported PEM block %q", block.Type)
	}
}

// IssueNodeCert signs a node certificate for pub: CN = name, IP SAN = ip,
// extended key usage server and client auth, valid for validity from now
// (backdated one hour for clock skew), with a random 128-bit serial.
func (ca *CA) IssueNodeCert(pub crypto.PublicKey, name string, ip net.IP, validity time.Duration) (certPEM []byte, err error) {
	if ca == nil || ca.Cert == nil || ca.Key == nil {
		return nil, errors.New("transport: issue node cert: CA has no certificate or key")
	}
	tmpl, err := nodeTemplate(name, ip, validity)
	if err != nil {
		return nil, fmt.Errorf("transport: issue node cert: %w", err)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("transport: issue node cert for %q: %w", name, err)
	}
	return encodePEM(pemCert, der), nil
}

// SelfSigned makes the certificate a standalone node (in no cluster yet)
// serves with: CN = name, IP SAN = ip, self-signed by key. Peers trust it only
// by its pinned fingerprint.
func SelfSigned(key crypto.Signer, name string, ip net.IP) (certPEM []byte, err error) {
	if key == nil {
		return nil, errors.New("transport: self-signed cert: nil key")
	}
	tmpl, err := nodeTemplate(name, ip, selfSignedValidity)
	if err != nil {
		return nil, fmt.Errorf("transport: self-signed cert: %w", err)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("transport: self-signed cert for %q: %w", name, err)
	}
	return encodePEM(pemCert, der), nil
}

// Fingerprint returns the SHA-256 of a DER certificate as upper-case hex
// pairs joined by ':' ("AA:BB:...").
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return formatFingerprint(sum[:])
}

// NormalizeFingerprint accepts a SHA-256 fingerprint in upper or lower case,
// with or without ':' separators (surrounding space is ignored), and returns
// the canonical form of Fingerprint, or an error wrapping ErrBadFingerprint.
func NormalizeFingerprint(s string) (string, error) {
	h := strings.ReplaceAll(strings.TrimSpace(s), ":", "")
	if len(h) != 2*sha256.Size {
		return "", fmt.Errorf("%w: %q: want %d hex digits, got %d", ErrBadFingerprint, s, 2*sha256.Size, len(h))
	}
	b, err := hex.DecodeString(h)
	if err != nil {
		return "", fmt.Errorf("%w: %q: not hexadecimal", ErrBadFingerprint, s)
	}
	return formatFingerprint(b), nil
}

func formatFingerprint(b []byte) string {
	const digits = "0123456789ABCDEF"
	var sb strings.Builder
	sb.Grow(len(b) * 3)
	for i, c := range b {
		if i > 0 {
			sb.WriteByte(':')
		}
		sb.WriteByte(digits[c>>4])
		sb.WriteByte(digits[c&0x0f])
	}
	return sb.String()
}

func nodeTemplate(name string, ip net.IP, validity time.Duration) (*x509.Certificate, error) {
	if name == "" {
		return nil, errors.New("empty node name")
	}
	if ip == nil || ip.IsUnspecified() {
		return nil, fmt.Errorf("node %q: IP address %v is not a usable address", name, ip)
	}
	if validity <= 0 {
		return nil, fmt.Errorf("node %q: validity %v is not positive", name, validity)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	return &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name},
		IPAddresses:           []net.IP{ip},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}, nil
}

// randomSerial returns a random positive 128-bit serial number.
func randomSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, fmt.Errorf("transport: serial number: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

func encodePEM(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// parseCertPEM parses the first CERTIFICATE block of b.
func parseCertPEM(b []byte) (*x509.Certificate, error) {
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			return nil, errors.New("no CERTIFICATE PEM block")
		}
		if block.Type == pemCert {
			return x509.ParseCertificate(block.Bytes)
		}
	}
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ea, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ea.Equal(b)
}
