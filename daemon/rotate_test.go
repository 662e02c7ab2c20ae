package daemon

import (
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/fsm"
	"github.com/pmgcm/pmgcm/transport"
)

func TestCertWarnings(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	rows := []api.Node{
		{CID: 1, Name: "a", IP: "10.0.0.1", CertExpires: now.Add(400 * 24 * time.Hour)},
		{CID: 2, Name: "b", IP: "10.0.0.2", CertExpires: now.Add(10 * 24 * time.Hour)},
		{CID: 3, Name: "c", IP: "10.0.0.3"}, // down: expiry unknown
		{CID: 4, Name: "d", IP: "10.0.0.4", CertExpires: now.Add(-time.Hour)},
	}
	w := certWarnings(rows, now)
	if len(w) != 2 || !strings.Contains(w[0], "cid 2 (b, 10.0.0.2) expires 2026-01-11") ||
		!strings.Contains(w[1], "cid 4 (d, 10.0.0.4) expired") || !strings.Contains(w[0], "pmgcm update-fingerprints") {
		t.Fatalf("warnings %q", w)
	}
}

func TestCheckNodeCert(t *testing.T) {
	ca, err := transport.NewCA("c1")
	if err != nil {
		t.Fatal(err)
	}
	other, err := transport.NewCA("c2")
	if err != nil {
		t.Fatal(err)
	}
	key, _, err := transport.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	m := fsm.Member{CID: 2, Name: "n2", IP: "10.0.0.2", Port: 8006}
	good, _ := ca.IssueNodeCert(key.Public(), "n2", net.ParseIP("10.0.0.2"), time.Hour)
	fp, err := checkNodeCert(good, ca.CertPEM, m)
	if err != nil || fp == "" {
		t.Fatalf("good certificate: %q, %v", fp, err)
	}
	wrongName, _ := ca.IssueNodeCert(key.Public(), "n3", net.ParseIP("10.0.0.2"), time.Hour)
	wrongIP, _ := ca.IssueNodeCert(key.Public(), "n2", net.ParseIP("10.0.0.3"), time.Hour)
	wrongCA, _ := other.IssueNodeCert(key.Public(), "n2", net.ParseIP("10.0.0.2"), time.Hour)
	for name, pem := range map[string][]byte{"name": wrongName, "ip": wrongIP, "ca": wrongCA, "garbage": []byte("x")} {
		if _, err := checkNodeCert(pem, ca.CertPEM, m); !errors.Is(err, ErrBadRequest) {
			t.Errorf("wrong %s: %v", name, err)
		}
	}
}
