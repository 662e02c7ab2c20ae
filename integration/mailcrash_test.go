package integration

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/internal/testutil"
)

// Crash drills of group-committed mail intake (issue 16): concurrent SMTP transactions
// share the index commit and directory syncs of their node's mail store, and each is
// answered 250 only after the batch it was in has committed. kill -9 at any moment must
// lose no message that got its 250, nor damage its body.

// mailCrashRounds is how many kill -9 rounds each mail crash drill runs.
const mailCrashRounds = 8

// mailCrashConns are how many SMTP connections send at once, so that batches form
// (the rounds alternate between them).
var mailCrashConns = []int{6, 32}

// intakeLoad is a number of SMTP senders streaming distinct 20 KiB messages to the
// nodes until stopped; each records the messages answered 250.
type intakeLoad struct {
	mu    sync.Mutex
	acked map[string][]byte // subject -> message
	quit  chan struct{}
	wg    sync.WaitGroup
}

// startIntake starts the conns senders of round; sender i sends to addrs[i%len(addrs)]
// over one connection, redialled after a failure.
func startIntake(round, conns int, addrs []string) *intakeLoad {
	l := &intakeLoad{acked: map[string][]byte{}, quit: make(chan struct{})}
	for i := 0; i < conns; i++ {
		addr := addrs[i%len(addrs)]
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			var s *smtpConn
			defer func() { s.close() }()
			for j := 0; ; j++ {
				select {
				case <-l.quit:
					return
				default:
				}
				if s == nil {
					var err error
					if s, err = dialSMTP(addr); err != nil {
						s = nil
						time.Sleep(20 * time.Millisecond) // a retry pace, not a wait for a state
						continue
					}
				}
				subj := fmt.Sprintf("crash-%d-%d-%d", round, i, j)
				msg := mailMsg(subj, 20<<10)
				if err := s.send([]string{"user@" + mailDomain}, msg); err != nil {
					s.close()
					s = nil
					continue
				}
				l.mu.Lock()
				l.acked[subj] = msg
				l.mu.Unlock()
			}
		}()
	}
	return l
}

func (l *intakeLoad) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acked)
}

// waitAcks waits until n messages got a 250.
func (l *intakeLoad) waitAcks(t testing.TB, n int, timeout time.Duration) {
	t.Helper()
	testutil.Poll(t, fmt.Sprintf("%d messages answered 250", n), timeout, func() error {
		if got := l.count(); got < n {
			return fmt.Errorf("%d answered 250", got)
		}
		return nil
	})
}

// stop ends the senders and returns the messages answered 250.
func (l *intakeLoad) stop() map[string][]byte {
	close(l.quit)
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.acked
}

// checkBodies fails unless n lists every message of msgs and serves each byte-exact.
func checkBodies(t testing.TB, n *Node, msgs map[string][]byte, timeout time.Duration) {
	t.Helper()
	want := map[string]string{}
	for subj, m := range msgs {
		want[subj] = sha(m)
	}
	waitMail(t, []*Node{n}, want, timeout)
	list, err := quarantine(n, "")
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, m := range list {
		msg, ok := msgs[m.Subject]
		if !ok {
			continue
		}
		got, err := showMsg(n, m.ID)
		if err != nil {
			t.Fatalf("%s: show %s (%s): %v", n.Name, m.ID, m.Subject, err)
		}
		if !bytes.Equal(got, msg) {
			t.Fatalf("%s: body of %s (%s) is %d bytes sha256 %s, sent %d bytes sha256 %s",
				n.Name, m.ID, m.Subject, len(got), sha(got), len(msg), sha(msg))
		}
		checked++
	}
	if checked < len(msgs) {
		t.Fatalf("%s: %d of %d messages served", n.Name, checked, len(msgs))
	}
}

// TestKillDuringMailIntakeLosesNo250: a one-node cluster takes mail over 6 or 32 SMTP
// connections at once and is killed with SIGKILL at a random moment, round after round;
// after each restart every message answered 250 so far is listed and served byte-exact.
// With one node no peer can hand a lost body back: its own disk is all there is.
func TestKillDuringMailIntakeLosesNo250(t *testing.T) {
	t.Parallel()
	mc := newMailCluster(t, 1, false)
	mc.form()
	n := mc.Nodes[0]
	setConfig(t, mc.Nodes, keyRelayDomains, mailDomain)
	rng := rand.New(rand.NewPCG(16, 250))
	all := map[string][]byte{}
	for round := 0; round < mailCrashRounds; round++ {
		conns := mailCrashConns[round%len(mailCrashConns)]
		l := startIntake(round, conns, []string{mc.addr(n)})
		l.waitAcks(t, 2*conns, 30*time.Second)
		killAfter := time.Duration(rng.IntN(300)) * time.Millisecond
		time.Sleep(killAfter) // not a wait for state: a random moment of the kill
		n.Kill()
		got := l.stop()
		for k, v := range got {
			all[k] = v
		}
		n.Start()
		checkBodies(t, n, got, 30*time.Second)
		want := map[string]string{}
		for k, v := range all {
			want[k] = sha(v)
		}
		waitMail(t, mc.Nodes, want, 30*time.Second)
		t.Logf("round %d: %d connections, killed %s after %s; %d messages answered 250 in the round, %d in all, none lost",
			round, conns, n.Name, killAfter, len(got), len(all))
	}
}

// TestKillDuringMailIntakeClusterLosesNo250: a 3-node cluster takes mail over 6 SMTP
// connections spread over its nodes while it replicates; a random node is killed with
// SIGKILL at a random moment, round after round, and restarted. Every message answered
// 250 so far ends up on every node, byte-exact (the killed node's own intake too, which
// it alone held when it died).
func TestKillDuringMailIntakeClusterLosesNo250(t *testing.T) {
	t.Parallel()
	mc := newMailCluster(t, 3, false)
	mc.form()
	nodes := mc.Nodes
	setConfig(t, nodes, keyRelayDomains, mailDomain)
	var addrs []string
	for _, n := range nodes {
		addrs = append(addrs, mc.addr(n))
	}
	rng := rand.New(rand.NewPCG(16, 3250))
	all := map[string][]byte{}
	for round := 0; round < mailCrashRounds; round++ {
		victim := nodes[rng.IntN(len(nodes))]
		l := startIntake(round, mailCrashConns[0], addrs)
		l.waitAcks(t, 30, 30*time.Second)
		time.Sleep(time.Duration(rng.IntN(300)) * time.Millisecond) // not a wait for state: a random moment of the kill
		victim.Kill()
		got := l.stop()
		for k, v := range got {
			all[k] = v
		}
		victim.Start()
		mc.waitAllActive(nodes, 60*time.Second)
		for _, n := range nodes {
			checkBodies(t, n, got, 60*time.Second)
		}
		want := map[string]string{}
		for k, v := range all {
			want[k] = sha(v)
		}
		waitMail(t, nodes, want, 60*time.Second)
		t.Logf("round %d: killed %s; %d messages answered 250 in the round, %d in all, on every node",
			round, victim.Name, len(got), len(all))
	}
}
