package daemon

import (
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/fsm"
	"github.com/pmgcm/pmgcm/transport"
)

// The files of the data directory are written by the daemon itself, but read back after
// crashes, restores of the disk and hand edits: their decoders must refuse anything bad
// with ErrCorruptData (and a fix to apply), never panic.

// FuzzNodeFile checks the decoder of node.json.
func FuzzNodeFile(f *testing.F) {
	for _, nf := range []nodeFile{
		{Format: nodeFileFormat, Name: "n1", IP: "127.0.0.1", Port: 8006, CID: 1},
		{Format: nodeFileFormat, Name: "n2", IP: "10.0.0.2", Port: 8006, CID: 7, Joined: true, WipeRaft: true,
			Removed: "c-1", PendingEpoch: 3, JoinIndex: 99,
			Fenced: &fenceInfo{ClusterID: "c-1", Epoch: 2, MasterCID: 1, MasterName: "n1", MasterIP: "10.0.0.1"}},
	} {
		b, err := json.Marshal(nf)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"format":2}`))
	f.Add([]byte(`{"format":1,"ip":"x","port":1,"cid":1,"fenced":null}`))
	dir := f.TempDir()
	d := &dataDir{path: dir}
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := os.WriteFile(d.file("node.json"), b, 0o600); err != nil {
			t.Fatal(err)
		}
		nf, ok, err := d.readNodeFile()
		if err != nil {
			if !errors.Is(err, ErrCorruptData) {
				t.Fatalf("readNodeFile error %v is not ErrCorruptData", err)
			}
			return
		}
		if !ok || nf.Format != nodeFileFormat || nf.IP == "" || nf.Port == 0 || nf.CID == 0 {
			t.Fatalf("accepted %+v (ok %v)", nf, ok)
		}
		if err := d.writeNodeFile(nf); err != nil {
			t.Fatal(err)
		}
		again, _, err := d.readNodeFile()
		if err != nil || !reflect.DeepEqual(again, nf) {
			t.Fatalf("node.json does not round-trip: %+v then %+v (%v)", nf, again, err)
		}
	})
}

// FuzzPeersFile checks the decoder of peers.json.
func FuzzPeersFile(f *testing.F) {
	m := fsm.Member{CID: 1, Name: "n1", IP: "10.0.0.1", Port: 8006, Fingerprint: "AA:BB", Epoch: 1}
	b, err := json.Marshal(peerCache{Index: 5, ClusterID: "c-1", Epoch: 1, Members: []fsm.Member{m}})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte(`{"index":1,"members":[{}]}`))
	f.Add([]byte(`{"members":null}`))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		d := &Daemon{dir: &dataDir{path: dir}}
		if err := os.WriteFile(d.peersPath(), b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := d.loadPeers(); err != nil {
			if !errors.Is(err, ErrCorruptData) {
				t.Fatalf("loadPeers error %v is not ErrCorruptData", err)
			}
			return
		}
		p := d.peers.Load()
		if p == nil {
			t.Fatal("loadPeers accepted the file but stored no cache")
		}
		for _, m := range p.Members {
			if got, ok := p.member(m.Fingerprint); !ok || got.Fingerprint != m.Fingerprint {
				t.Fatalf("member %q not found by fingerprint", m.Fingerprint)
			}
		}
	})
}

// FuzzIdentity checks the decoders of the node's key, certificate and CA certificate
// (tls/): a bad one is refused with ErrCorruptData.
func FuzzIdentity(f *testing.F) {
	key, keyPEM, err := transport.NewKey()
	if err != nil {
		f.Fatal(err)
	}
	ip := net.ParseIP("127.0.0.1")
	certPEM, err := transport.SelfSigned(key, "n1", ip)
	if err != nil {
		f.Fatal(err)
	}
	ca, err := transport.NewCA("c-1")
	if err != nil {
		f.Fatal(err)
	}
	issued, err := ca.IssueNodeCert(key.Public(), "n1", ip, 24*time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(keyPEM, certPEM, []byte{})
	f.Add(keyPEM, issued, ca.CertPEM)
	f.Add(keyPEM, issued, certPEM) // a CA that did not sign the certificate
	f.Add(ca.KeyPEM, issued, ca.CertPEM)
	dir := f.TempDir()
	d := &dataDir{path: dir}
	if err := os.MkdirAll(filepath.Join(dir, "tls"), 0o700); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, keyPEM, certPEM, caPEM []byte) {
		for name, b := range map[string][]byte{keyFile: keyPEM, certFile: certPEM, caFile: caPEM} {
			if err := os.WriteFile(d.file("tls", name), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		id, signer, err := d.loadIdentity("n1", ip)
		if err != nil {
			if !errors.Is(err, ErrCorruptData) {
				t.Fatalf("loadIdentity error %v is not ErrCorruptData", err)
			}
			return
		}
		if id == nil || signer == nil {
			t.Fatal("loadIdentity accepted the files but returned no identity")
		}
	})
}
