package integration

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/internal/testutil"
)

// Joins with thousands of messages (issue 16): the joining node fetches the bodies
// several at a time (mailrepl's fetchers); these drills check that it ends with every
// message and every body whole, also when its source dies or restarts mid-transfer.

// fillMail sends count messages (subjects prefix-0000...) of 2-8 KiB over conns SMTP
// connections spread over nodes, and returns subject -> SHA-256 of each one answered 250.
func fillMail(t testing.TB, mc *mailCluster, nodes []*Node, prefix string, count, conns int) map[string]string {
	t.Helper()
	var (
		mu   sync.Mutex
		want = map[string]string{}
		next atomic.Int64
		errs []error
		wg   sync.WaitGroup
	)
	for c := 0; c < conns; c++ {
		n := nodes[c%len(nodes)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := dialSMTP(mc.addr(n))
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
				return
			}
			defer s.close()
			for {
				i := int(next.Add(1)) - 1
				if i >= count {
					return
				}
				subj := fmt.Sprintf("%s-%04d", prefix, i)
				msg := mailMsg(subj, 2048+(i%7)*1024)
				if err := s.send([]string{"user@" + mailDomain}, msg); err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("send %s to %s: %w", subj, n.Name, err))
					mu.Unlock()
					return
				}
				mu.Lock()
				want[subj] = sha(msg)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return want
}

// checkVerified runs `pmgcm check --verify-bodies` on n: every node holds the same
// messages in the same states, and every body on every node re-hashes to its SHA-256.
func checkVerified(t testing.TB, n *Node) {
	t.Helper()
	testutil.Poll(t, "pmgcm check --verify-bodies on "+n.Name, 60*time.Second, func() error {
		out, errOut, err := n.run("check", "--verify-bodies")
		if err != nil {
			return fmt.Errorf("%v: %s%s", err, out, errOut)
		}
		return nil
	})
}

// TestMailJoinBulk: a node joining a cluster of 3 that holds 3,000 messages shows S
// while it lacks any, then A with every message listed with its checksum, and every
// body on every node verified whole.
func TestMailJoinBulk(t *testing.T) {
	t.Parallel()
	skipShort(t)
	mc := newMailCluster(t, 4, false)
	first := mc.formMailNodes(3)
	n4 := mc.Nodes[3]
	began := time.Now()
	want := fillMail(t, mc, first, "bulk", 3000, 6)
	t.Logf("sent %d messages in %s", len(want), time.Since(began).Round(time.Millisecond))
	waitMail(t, first, want, 120*time.Second)

	n4.Start()
	n4.CLI(append(joinArgs(t, mc.Nodes[0]), "--yes", "--wait", "0")...)
	began = time.Now()
	saw, most := watchCatchUp(t, n4, want, 120*time.Second)
	t.Logf("node4 received %d messages in %s after its join; largest backlog seen %d (S seen: %v)",
		len(want), time.Since(began).Round(time.Millisecond), most, saw)
	if !saw {
		t.Errorf("node4 was never seen in state S with a mail backlog while it received %d messages", len(want))
	}
	mc.waitAllActive(mc.Nodes, 60*time.Second)
	checkVerified(t, n4)
}

// joinerMail is n's own state and mail status, read over the control socket.
func joinerMail(n *Node) (state string, ms api.MailStatus, err error) {
	r, err := localStatus(n)
	if err != nil {
		return "", api.MailStatus{}, err
	}
	if r.Mail == nil {
		return r.State, api.MailStatus{}, fmt.Errorf("%s: no mail in status", n.Name)
	}
	return r.State, *r.Mail, nil
}

// midTransfer waits until joiner knows every one of want messages (their events) but
// still lacks bodies, fewer than below bytes of them, and returns true; false when it
// already has everything (too late to catch it mid-transfer).
func midTransfer(t testing.TB, joiner *Node, want int, below int64, timeout time.Duration) bool {
	t.Helper()
	mid := false
	err := testutil.WaitEvery(context.Background(), joiner.Name+" mid-transfer", timeout, 5*time.Millisecond, func() error {
		state, ms, err := joinerMail(joiner)
		if err != nil {
			return err
		}
		switch {
		case ms.Messages >= int64(want) && ms.BacklogKnown && ms.BacklogMessages > 0 && ms.BacklogBytes < below:
			mid = true
			return nil
		case ms.Messages >= int64(want) && ms.BacklogKnown && ms.BacklogMessages == 0 && state == api.StateActive:
			return nil
		}
		return fmt.Errorf("state %s mail %+v", state, ms)
	})
	if err != nil {
		t.Fatal(err)
	}
	return mid
}

// joinWithMail makes a one-node cluster holding 4,000 messages (subjects named by
// prefix) and starts the join of a second node without waiting for it; it returns the
// cluster, its member, the joining node and the messages.
func joinWithMail(t *testing.T, prefix string) (mc *mailCluster, n1, n2 *Node, want map[string]string) {
	t.Helper()
	mc = newMailCluster(t, 2, false)
	first := mc.formMailNodes(1)
	n1, n2 = mc.Nodes[0], mc.Nodes[1]
	want = fillMail(t, mc, first, prefix, 4000, 4)
	waitMail(t, first, want, 120*time.Second)
	n2.Start()
	n2.CLI(append(joinArgs(t, n1), "--yes", "--wait", "0")...)
	return mc, n1, n2, want
}

// TestMailJoinSourceRestarted: the only source of a joining node's mail (the one other
// member) is killed with kill -9 while bodies are in transfer, and started again, twice;
// the joining node then ends with every message and every body whole.
func TestMailJoinSourceRestarted(t *testing.T) {
	t.Parallel()
	skipShort(t)
	mc, n1, n2, want := joinWithMail(t, "restart")
	// Each kill after the first waits until node2 has received more from the restarted
	// source: the transfer resumed.
	kills := 0
	below := int64(math.MaxInt64)
	for kills < 2 && midTransfer(t, n2, len(want), below, 120*time.Second) {
		_, ms, _ := joinerMail(n2)
		t.Logf("kill -9 of %s (the only source) with node2 lacking %d bodies (%d bytes)", n1.Name, ms.BacklogMessages, ms.BacklogBytes)
		n1.Kill()
		n1.Start()
		below = ms.BacklogBytes
		kills++
	}
	if kills == 0 {
		t.Fatal("node2 had every body before the source could be killed: the drill did not exercise a transfer")
	}
	watchCatchUp(t, n2, want, 120*time.Second)
	mc.waitAllActive(mc.Nodes, 60*time.Second)
	waitMail(t, mc.Nodes, want, 60*time.Second)
	checkVerified(t, n2)
}

// TestMailJoinPeerKilled: a member that serves a joining node's mail is killed with
// kill -9 mid-transfer and stays down; the joining node fetches the rest from the others
// and reaches state A with every message, never A while it lacks one.
func TestMailJoinPeerKilled(t *testing.T) {
	t.Parallel()
	skipShort(t)
	mc := newMailCluster(t, 4, false)
	first := mc.formMailNodes(3)
	n4 := mc.Nodes[3]
	want := fillMail(t, mc, first, "peerkill", 3000, 6)
	waitMail(t, first, want, 120*time.Second)

	m := mc.master()
	var victim *Node
	for _, n := range first {
		if n != m {
			victim = n
			break
		}
	}
	n4.Start()
	n4.CLI(append(joinArgs(t, m), "--yes", "--wait", "0")...)
	if !midTransfer(t, n4, len(want), math.MaxInt64, 120*time.Second) {
		t.Fatal("node4 had every body before a peer could be killed: the drill did not exercise a transfer")
	}
	_, ms, _ := joinerMail(n4)
	t.Logf("kill -9 of %s with node4 lacking %d bodies (%d bytes)", victim.Name, ms.BacklogMessages, ms.BacklogBytes)
	victim.Kill()
	watchCatchUp(t, n4, want, 120*time.Second)
	var rest []*Node
	for _, n := range mc.Nodes {
		if n != victim {
			rest = append(rest, n)
		}
	}
	waitMail(t, rest, want, 60*time.Second)
	victim.Start()
	mc.waitAllActive(mc.Nodes, 60*time.Second)
	checkVerified(t, n4)
}
