package daemon

import (
	"crypto"
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/pmgcm/pmgcm/internal/dirsync"
	"github.com/pmgcm/pmgcm/transport"
)

// Files of the tls/ directory. A ".pending" file is written before the Raft command that
// makes it valid and renamed into place after it commits (see create.go).
const (
	keyFile     = "node.key"
	certFile    = "node.crt"
	caFile      = "ca.crt"
	pendingSufx = ".pending"
)

// loadIdentity reads this node's key and certificate, making a key and a self-signed
// certificate on first start (a standalone node), and the cluster CA if there is one.
func (d *dataDir) loadIdentity(name string, ip net.IP) (*transport.Identity, crypto.Signer, error) {
	keyPath := d.file("tls", keyFile)
	keyPEM, err := readFileBounded(keyPath, maxTLSFileBytes)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if _, keyPEM, err = transport.NewKey(); err != nil {
			return nil, nil, err
		}
		if err := writeFileAtomic(keyPath, keyPEM, 0o600); err != nil {
			return nil, nil, fmt.Errorf("write %s: %w", keyPath, err)
		}
	case err != nil:
		return nil, nil, readErr(keyPath, err)
	}
	key, err := transport.ParseKey(keyPEM)
	if err != nil {
		return nil, nil, corrupt(keyPath, err)
	}
	certPath := d.file("tls", certFile)
	certPEM, err := readFileBounded(certPath, maxTLSFileBytes)
	switch {
	case errors.Is(err, os.ErrNotExist):
		certPEM, err = transport.SelfSigned(key, name, ip)
		if err != nil {
			return nil, nil, err
		}
		if err := writeFileAtomic(certPath, certPEM, 0o644); err != nil {
			return nil, nil, fmt.Errorf("write %s: %w", certPath, err)
		}
	case err != nil:
		return nil, nil, readErr(certPath, err)
	}
	caPath := d.file("tls", caFile)
	caPEM, err := readFileBounded(caPath, maxTLSFileBytes)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, nil, readErr(caPath, err)
	}
	id, err := transport.NewIdentity(certPEM, keyPEM, caPEM)
	if err != nil {
		return nil, nil, corrupt(certPath, err)
	}
	return id, key, nil
}

// keyPEM returns the node key file's contents.
func (d *dataDir) keyPEM() ([]byte, error) {
	return readFileBounded(d.file("tls", keyFile), maxTLSFileBytes)
}

// writePendingIdentity stores a certificate and CA that become valid once a Raft command
// commits.
func (d *dataDir) writePendingIdentity(certPEM, caPEM []byte) error {
	if err := writeFileAtomic(d.file("tls", certFile+pendingSufx), certPEM, 0o644); err != nil {
		return err
	}
	return writeFileAtomic(d.file("tls", caFile+pendingSufx), caPEM, 0o644)
}

// commitPendingIdentity moves the pending certificate and CA into place.
func (d *dataDir) commitPendingIdentity() error {
	// The CA first: a node certificate signed by a CA we do not trust yet would be
	// worse than the reverse, which the next start repairs.
	if err := os.Rename(d.file("tls", caFile+pendingSufx), d.file("tls", caFile)); err != nil {
		return err
	}
	if err := os.Rename(d.file("tls", certFile+pendingSufx), d.file("tls", certFile)); err != nil {
		return err
	}
	return dirsync.Sync(d.file("tls"))
}

// dropPendingIdentity removes pending files left by a command that did not commit.
func (d *dataDir) dropPendingIdentity() {
	_ = os.Remove(d.file("tls", caFile+pendingSufx))
	_ = os.Remove(d.file("tls", certFile+pendingSufx))
}

// pendingCert returns the pending certificate, if any.
func (d *dataDir) pendingCert() ([]byte, bool) {
	b, err := readFileBounded(d.file("tls", certFile+pendingSufx), maxTLSFileBytes)
	return b, err == nil
}
