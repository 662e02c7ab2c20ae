package integration

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/api"
	apiclient "github.com/pmgcm/pmgcm/api/client"
	"github.com/pmgcm/pmgcm/internal/testutil"
	"github.com/pmgcm/pmgcm/transport"
)

// TestCertificateRotation: certificate rotation under a steady write load: no failed
// write, old fingerprint refused afterwards. Every node renews its own certificate, then
// the master renews them all again with --all; writes go on through a follower's and the
// master's sockets all along. Afterwards the old certificates are refused at the
// handshake, the new ones accepted, status lists the new fingerprints and their expiry,
// and join-cmd prints the master's new fingerprint.
func TestCertificateRotation(t *testing.T) {
	c := newCluster(t, 3)
	c.form()
	m := c.master()
	old := map[*Node]string{}
	st := mustStatus(t, m)
	for _, n := range c.Nodes {
		for _, r := range st.Nodes {
			if r.IP == n.IP {
				old[n] = r.Fingerprint
				if time.Until(r.CertExpires) < 700*24*time.Hour {
					t.Fatalf("%s: certificate expires %v, want about 2 years ahead", n.Name, r.CertExpires)
				}
			}
		}
	}
	oldIDs := map[*Node]*transport.Mux{}
	for _, n := range c.Nodes {
		oldIDs[n] = identityOf(t, n)
	}

	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var writes, failed atomic.Int64
	var errMu sync.Mutex
	var errs []string
	var perWriter [2]atomic.Int64 // the writes that each writer has completed
	for w, n := range c.Nodes[:2] {
		client := apiclient.New(n.Socket)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				wctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				_, err := client.ConfigSet(wctx, fmt.Sprintf("rot/%s", n.Name), []byte(fmt.Sprint(i)), apiclient.WriteOptions{})
				cancel()
				writes.Add(1)
				perWriter[w].Add(1)
				if err != nil {
					failed.Add(1)
					errMu.Lock()
					errs = append(errs, fmt.Sprintf("%s: %v", n.Name, err))
					errMu.Unlock()
				}
				time.Sleep(5 * time.Millisecond) // the load's pace, not a wait for a state
			}
		}()
	}
	// moreWrites waits until each writer has completed n more writes than at the call.
	moreWrites := func(what string, n int64) {
		t.Helper()
		var from [2]int64
		for i := range perWriter {
			from[i] = perWriter[i].Load()
		}
		testutil.Poll(t, what, 30*time.Second, func() error {
			for i := range perWriter {
				if got := perWriter[i].Load() - from[i]; got < n {
					return fmt.Errorf("writer on %s: %d of %d writes", c.Nodes[i].Name, got, n)
				}
			}
			return nil
		})
	}
	moreWrites("the write load under way before the first renewal", 3)
	for _, n := range c.Nodes {
		out := n.CLI("update-fingerprints")
		if !strings.Contains(out, "new fingerprint") {
			t.Fatalf("%s: update-fingerprints printed %q", n.Name, out)
		}
	}
	out := m.CLI("update-fingerprints", "--all")
	if strings.Count(out, "new fingerprint") != 3 {
		t.Fatalf("update-fingerprints --all printed %q", out)
	}
	moreWrites("writes on both sockets after the last renewal", 3)
	stop()
	wg.Wait()
	t.Logf("%d writes during the rotation, %d failed", writes.Load(), failed.Load())
	if failed.Load() != 0 || writes.Load() < 10 {
		t.Fatalf("%d of %d writes failed during the rotation: %v", failed.Load(), writes.Load(), errs)
	}

	// Every node lists the new fingerprints, and they expire about 2 years from now.
	c.waitAllActive(c.Nodes, 30*time.Second)
	for _, n := range c.Nodes {
		st := mustStatus(t, n)
		for _, r := range st.Nodes {
			for o, fp := range old {
				if o.IP == r.IP && r.Fingerprint == fp {
					t.Errorf("%s still lists the old fingerprint of %s", n.Name, o.Name)
				}
			}
			if time.Until(r.CertExpires) < 700*24*time.Hour {
				t.Errorf("%s: %s's certificate expires %v", n.Name, r.Name, r.CertExpires)
			}
		}
		if len(st.Cluster.Warnings) != 0 {
			t.Errorf("%s: warnings %q", n.Name, st.Cluster.Warnings)
		}
	}

	// The old certificates are refused at the handshake; the new ones are accepted.
	for _, from := range c.Nodes {
		newID := identityOf(t, from)
		for _, to := range c.Nodes {
			if to == from {
				continue
			}
			if err := dialRPC(oldIDs[from], to); err == nil {
				t.Errorf("%s accepts %s's old certificate", to.Name, from.Name)
			}
			if err := dialRPC(newID, to); err != nil {
				t.Errorf("%s refuses %s's new certificate: %v", to.Name, from.Name, err)
			}
		}
	}

	// join-cmd names the master's current fingerprint.
	m = c.master()
	args := joinArgs(t, m)
	var fp string
	for _, r := range mustStatus(t, m).Nodes {
		if r.Role == api.RoleMaster {
			fp = r.Fingerprint
		}
	}
	if args[3] != fp || fp == old[m] {
		t.Errorf("join-cmd fingerprint %s, master's current %s, old %s", args[3], fp, old[m])
	}
}
