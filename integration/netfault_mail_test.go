package integration

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/internal/netfault"
)

// Environment of the sender helper process (TestNetfaultMailSenderProcess).
const (
	envSendAddr = "PMGCM_NETNS_SEND_ADDR"
	envSendN    = "PMGCM_NETNS_SEND_N"
)

// newNetnsMailCluster is newMailCluster with every node's daemon inside a network
// namespace of the test's own, as newNetnsCluster.
func newNetnsMailCluster(t testing.TB, n int) *mailCluster {
	t.Helper()
	ns := netfault.New(t) // cleaned up after the cluster's cleanup has killed the nodes
	mc := newMailCluster(t, n, false)
	mc.inNetns(ns)
	return mc
}

// sendInNetns sends n messages to addr from inside the namespace (the test process is
// outside it, where the nodes' addresses do not reach), by this test binary run again as
// TestNetfaultMailSenderProcess, and returns subject -> SHA-256 of those answered 250.
func sendInNetns(t *testing.T, ns *netfault.NS, addr string, n int) map[string]string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := ns.Command(exe, "-test.run", "^TestNetfaultMailSenderProcess$", "-test.v")
	cmd.Env = append(os.Environ(), envSendAddr+"="+addr, envSendN+"="+strconv.Itoa(n))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("sender in the namespace: %v\n%s", err, out)
	}
	sent := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 3 && f[0] == "SENT" {
			sent[f[1]] = f[2]
		}
	}
	if len(sent) != n {
		t.Fatalf("sender in the namespace: %d of %d messages answered 250\n%s", len(sent), n, out)
	}
	return sent
}

// TestNetfaultMailSenderProcess is not a test of its own: sendInNetns runs it inside a
// namespace, where it sends messages of 20 KiB and two of 1.5 MiB (fetched alone, not in
// a bulk answer) over 4 connections and prints "SENT subject sha256" for each 250.
func TestNetfaultMailSenderProcess(t *testing.T) {
	addr := os.Getenv(envSendAddr)
	if addr == "" {
		t.Skip("the sender helper of TestNetfaultMailLossyLinks (run by sendInNetns)")
	}
	n, err := strconv.Atoi(os.Getenv(envSendN))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for c := 0; c < 4; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := dialSMTP(addr)
			if err != nil {
				t.Error(err)
				return
			}
			defer s.close()
			for i := c; i < n; i += 4 {
				size := 20_000
				if i < 2 {
					size = 1_500_000
				}
				subject := fmt.Sprintf("lossy-%d", i)
				msg := mailMsg(subject, size)
				if err := s.send([]string{"user@" + mailDomain}, msg); err != nil {
					t.Errorf("%s: %v", subject, err)
					return
				}
				mu.Lock()
				fmt.Printf("SENT %s %s\n", subject, sha(msg))
				mu.Unlock()
			}
			_ = s.c.Quit()
		}()
	}
	wg.Wait()
}

// TestNetfaultMailLossyLinks: two replicas, stopped (SIGSTOP) while one node takes 120
// messages, catch up over links with 10% packet loss and 20 ms ± 10 ms delay: bulk answers
// of up to 32 bodies and single fetches of the large ones, over TCP connections that
// retransmit and stall, while the fault lasts. Nothing is lost and every body matches.
func TestNetfaultMailLossyLinks(t *testing.T) {
	t.Parallel()
	mc := newNetnsMailCluster(t, 3)
	nodes := mc.formMailNodes(3)
	nodes[1].Pause()
	nodes[2].Pause()
	sent := sendInNetns(t, mc.NS, mc.addr(nodes[0]), 120)
	mc.NS.Loss(10)
	mc.NS.Delay(20*time.Millisecond, 10*time.Millisecond)
	start := time.Now()
	nodes[1].Resume()
	nodes[2].Resume()
	waitMail(t, nodes, sent, 120*time.Second)
	t.Logf("120 messages (2 of 1.5 MiB) on both stopped replicas %s after they went on, under 10%% loss and 20ms±10ms delay",
		time.Since(start).Round(time.Millisecond))
	mc.NS.Heal()
}
