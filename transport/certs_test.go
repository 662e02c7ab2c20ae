package transport

import (
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestNewCA(t *testing.T) {
	ca := newTestCA(t)
	if !ca.Cert.IsCA || ca.Cert.Subject.CommonName != "pmgcm cluster CA test-cluster" {
		t.Fatalf("CA cert: IsCA=%v CN=%q", ca.Cert.IsCA, ca.Cert.Subject.CommonName)
	}
	if life := time.Until(ca.Cert.NotAfter); life < 9*365*24*time.Hour {
		t.Errorf("CA validity %v, want about 10 years", life)
	}
	back, err := ParseCA(ca.CertPEM, ca.KeyPEM)
	if err != nil {
		t.Fatalf("ParseCA: %v", err)
	}
	if !back.Cert.Equal(ca.Cert) || !publicKeysEqual(back.Key.Public(), ca.Key.Public()) {
		t.Error("ParseCA did not round-trip")
	}
	if _, err := NewCA(""); err == nil {
		t.Error("NewCA(\"\") succeeded")
	}
}

func TestParseCAErrors(t *testing.T) {
	ca, other := newTestCA(t), newTestCA(t)
	key, keyPEM, _ := NewKey()
	leafPEM, err := SelfSigned(key, "n1", loopback)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name          string
		certPEM, kPEM []byte
		want          string
	}{
		{"key of another CA", ca.CertPEM, other.KeyPEM, "does not match"},
		{"not a CA", leafPEM, keyPEM, "not a CA"},
		{"no cert", []byte("junk"), ca.KeyPEM, "no CERTIFICATE"},
		{"no key", ca.CertPEM, []byte("junk"), "no PEM block"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseCA(tt.certPEM, tt.kPEM)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ParseCA error = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestParseKey(t *testing.T) {
	key, pkcs8, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	sec1DER, err := x509.MarshalECPrivateKey(key.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	sec1 := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1DER})
	tests := []struct {
		name    string
		pem     []byte
		wantErr bool
	}{
		{"pkcs8", pkcs8, false},
		{"sec1", sec1, false},
		{"garbage", []byte("not pem"), true},
		{"wrong block", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}}), true},
		{"bad der", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2}}), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseKey(tt.pem)
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParseKey error = %v, wantErr %v", err, tt.wantErr)
			}
			if err == nil && !publicKeysEqual(got.Public(), key.Public()) {
				t.Fatal("ParseKey returned a different key")
			}
		})
	}
}

func TestIssueNodeCert(t *testing.T) {
	ca, other := newTestCA(t), newTestCA(t)
	key, _, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	selfPEM, err := SelfSigned(key, "lonely", loopback)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		issue      func() ([]byte, error)
		wantIssue  bool // issuing succeeds
		wantVerify bool // verifies against ca
	}{
		{"node cert of the CA", func() ([]byte, error) {
			return ca.IssueNodeCert(key.Public(), "node1", loopback, 2*365*24*time.Hour)
		}, true, true},
		{"node cert of another CA", func() ([]byte, error) {
			return other.IssueNodeCert(key.Public(), "node1", loopback, time.Hour)
		}, true, false},
		{"self-signed", func() ([]byte, error) { return selfPEM, nil }, true, false},
		{"empty name", func() ([]byte, error) {
			return ca.IssueNodeCert(key.Public(), "", loopback, time.Hour)
		}, false, false},
		{"no IP", func() ([]byte, error) {
			return ca.IssueNodeCert(key.Public(), "n", nil, time.Hour)
		}, false, false},
		{"unspecified IP", func() ([]byte, error) {
			return ca.IssueNodeCert(key.Public(), "n", net.IPv4zero, time.Hour)
		}, false, false},
		{"zero validity", func() ([]byte, error) {
			return ca.IssueNodeCert(key.Public(), "n", loopback, 0)
		}, false, false},
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			certPEM, err := tt.issue()
			if (err == nil) != tt.wantIssue {
				t.Fatalf("issue error = %v, want success %v", err, tt.wantIssue)
			}
			if err != nil {
				return
			}
			cert, err := parseCertPEM(certPEM)
			if err != nil {
				t.Fatal(err)
			}
			if len(cert.IPAddresses) != 1 || !cert.IPAddresses[0].Equal(loopback) {
				t.Errorf("IP SANs = %v, want [%v]", cert.IPAddresses, loopback)
			}
			if cert.SerialNumber.BitLen() < 64 {
				t.Errorf("serial %v looks too short", cert.SerialNumber)
			}
			for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
				_, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{usage}})
				if (err == nil) != tt.wantVerify {
					t.Errorf("verify for usage %v: error = %v, want success %v", usage, err, tt.wantVerify)
				}
			}
		})
	}
}

func TestNodeCertValidity(t *testing.T) {
	ca := newTestCA(t)
	key, _, _ := NewKey()
	certPEM, err := ca.IssueNodeCert(key.Public(), "n1", loopback, 2*365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := parseCertPEM(certPEM)
	if cert.Subject.CommonName != "n1" || cert.IsCA {
		t.Errorf("CN=%q IsCA=%v", cert.Subject.CommonName, cert.IsCA)
	}
	want := time.Now().Add(2 * 365 * 24 * time.Hour)
	if d := cert.NotAfter.Sub(want); d < -time.Minute || d > time.Minute {
		t.Errorf("NotAfter = %v, want about %v", cert.NotAfter, want)
	}
	if !cert.NotBefore.Before(time.Now()) {
		t.Errorf("NotBefore %v is not in the past", cert.NotBefore)
	}
}

var fingerprintRE = regexp.MustCompile(`^([0-9A-F]{2}:){31}[0-9A-F]{2}$`)

func TestFingerprint(t *testing.T) {
	der := []byte("any bytes")
	fp := Fingerprint(der)
	if !fingerprintRE.MatchString(fp) {
		t.Fatalf("Fingerprint = %q, not colon-separated upper-case hex pairs", fp)
	}
	sum := sha256.Sum256(der)
	if strings.ReplaceAll(fp, ":", "") != strings.ToUpper(hex.EncodeToString(sum[:])) {
		t.Fatalf("Fingerprint = %q is not the SHA-256 of the input", fp)
	}
}

func TestNormalizeFingerprint(t *testing.T) {
	canon := Fingerprint([]byte("x"))
	bare := strings.ReplaceAll(canon, ":", "")
	tests := []struct {
		name, in string
		wantErr  bool
	}{
		{"canonical", canon, false},
		{"lower with colons", strings.ToLower(canon), false},
		{"upper bare", bare, false},
		{"lower bare", strings.ToLower(bare), false},
		{"surrounding space", "  " + canon + "\n", false},
		{"empty", "", true},
		{"too short", canon[:len(canon)-3], true},
		{"too long", canon + ":00", true},
		{"not hex", strings.Replace(canon, canon[:2], "ZZ", 1), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := NormalizeFingerprint(tt.in)
			if tt.wantErr {
				if !errors.Is(err, ErrBadFingerprint) {
					t.Fatalf("NormalizeFingerprint(%q) error = %v, want ErrBadFingerprint", tt.in, err)
				}
				return
			}
			if err != nil || got != canon {
				t.Fatalf("NormalizeFingerprint(%q) = %q, %v; want %q", tt.in, got, err, canon)
			}
		})
	}
}

func TestNewIdentity(t *testing.T) {
	ca, other := newTestCA(t), newTestCA(t)
	key, keyPEM, _ := NewKey()
	_, otherKeyPEM, _ := NewKey()
	certPEM, err := ca.IssueNodeCert(key.Public(), "n1", loopback, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name           string
		cert, key, cas []byte
		wantErr        string
		standalone     bool
	}{
		{"member", certPEM, keyPEM, ca.CertPEM, "", false},
		{"standalone", certPEM, keyPEM, nil, "", true},
		{"wrong CA", certPEM, keyPEM, other.CertPEM, "does not chain", false},
		{"wrong key", certPEM, otherKeyPEM, ca.CertPEM, "private key does not match", false},
		{"junk CA", certPEM, keyPEM, []byte("junk"), "no CA certificate", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := NewIdentity(tt.cert, tt.key, tt.cas)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("NewIdentity error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if id.Standalone() != tt.standalone || id.Fingerprint != Fingerprint(id.Leaf.Raw) {
				t.Fatalf("identity standalone=%v fingerprint=%q", id.Standalone(), id.Fingerprint)
			}
		})
	}
}
