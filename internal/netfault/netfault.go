// Package netfault runs test processes inside a network namespace it creates and injects
// real network faults between addresses there with the kernel's own tools: it cuts the
// traffic between chosen address pairs and drops a share of all packets at random, with
// nftables rules in the namespace's output hook (on loopback every packet passes it once).
//
// The namespace has only its loopback interface, so a test cluster runs on 127.0.x.y
// addresses inside it, one per node, and the rules select by source and destination
// address: the node-to-node dialers must bind the node's own address (transport does)
// or every connection would come from 127.0.0.1. Unix sockets (the control socket) are
// not in the network namespace: the CLI runs outside it unchanged.
//
// It needs root, `ip` (iproute2) and `nft` (nftables); scripts/netfault-deps.sh installs
// them. Without them New skips the test with a message saying what is missing. Delay
// has no netem qdisc and no nft queue statement on this kernel: it goes through an
// iptables-legacy NFQUEUE rule and a reader in the test process (delay_linux.go).
//
// It imports nothing of the project's.
package netfault

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// prefix starts the name of every namespace this package makes; the pid follows, so
// that New can remove the leftovers of a test binary that died before its cleanup.
const prefix = "pmgcm-nf-"

// table is the nftables table that holds the fault rules inside the namespace.
const table = "netfault"

var seq atomic.Uint64

// NS is one network namespace with its fault rules. Its methods fail the test on error
// and are safe for concurrent use.
type NS struct {
	t    testing.TB
	name string

	mu    sync.Mutex
	cuts  map[[2]string]bool // one-way cuts, from -> to
	lossP int                // random loss in percent, 0: none
	queue *delayQueue        // the delay queue, once Delay was called
	rule  bool               // the NFQUEUE rule is in place
}

// Available reports why the namespace cannot be made here, or "" when it can.
func Available() string {
	if os.Geteuid() != 0 {
		return "network namespaces need root (run the test as root)"
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Sprintf("%s not found (run scripts/netfault-deps.sh)", tool)
		}
	}
	return ""
}

// New creates a namespace with its loopback up and an empty fault table, and removes it
// when the test ends, whether it passed or not. Processes started with Command or
// Launcher must be ended by the test before that (an earlier t.Cleanup runs later).
// It skips the test when Available says no.
func New(t testing.TB) *NS {
	t.Helper()
	if why := Available(); why != "" {
		t.Skipf("netfault: %s", why)
	}
	removeStale(t)
	ns := &NS{t: t, name: fmt.Sprintf("%s%d-%d", prefix, os.Getpid(), seq.Add(1)), cuts: map[[2]string]bool{}}
	if out, err := run("ip", "netns", "add", ns.name); err != nil {
		t.Fatalf("netfault: ip netns add %s: %v: %s", ns.name, err, out)
	}
	t.Cleanup(func() {
		if out, err := run("ip", "netns", "del", ns.name); err != nil {
			t.Errorf("netfault: ip netns del %s: %v: %s", ns.name, err, out)
		}
	})
	ns.exec("ip", "link", "set", "lo", "up")
	ns.apply()
	return ns
}

// removeStale deletes namespaces of this package whose test binary no longer runs.
func removeStale(t testing.TB) {
	out, err := run("ip", "netns", "list")
	if err != nil {
		return
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], prefix) {
			continue
		}
		pidStr, _, _ := strings.Cut(strings.TrimPrefix(f[0], prefix), "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid == os.Getpid() || syscall.Kill(pid, 0) == nil || errors.Is(syscall.Kill(pid, 0), syscall.EPERM) {
			continue
		}
		if out, err := run("ip", "netns", "del", f[0]); err != nil {
			t.Logf("netfault: removing stale namespace %s: %v: %s", f[0], err, out)
		}
	}
}

// Name is the namespace's name, for `ip netns exec NAME ...` by hand.
func (ns *NS) Name() string { return ns.name }

// Launcher is the command prefix that runs a program inside the namespace:
// `ip netns exec NAME`. ip execs the program in place, so its pid is the program's
// (signals such as SIGSTOP reach it directly).
func (ns *NS) Launcher() []string { return []string{"ip", "netns", "exec", ns.name} }

// Command returns an exec.Cmd that runs name with args inside the namespace.
func (ns *NS) Command(name string, args ...string) *exec.Cmd {
	l := ns.Launcher()
	return exec.Command(l[0], append(append(l[1:], name), args...)...)
}

// Cut drops every packet between a and b, both ways (addresses such as 127.0.10.1).
// TCP sees silence, as with a pulled cable, not a reset.
func (ns *NS) Cut(a, b string) {
	ns.t.Helper()
	ns.check(a, b)
	ns.mu.Lock()
	ns.cuts[[2]string{a, b}] = true
	ns.cuts[[2]string{b, a}] = true
	ns.mu.Unlock()
	ns.apply()
}

// CutOneWay drops the packets from one address to another only.
func (ns *NS) CutOneWay(from, to string) {
	ns.t.Helper()
	ns.check(from, to)
	ns.mu.Lock()
	ns.cuts[[2]string{from, to}] = true
	ns.mu.Unlock()
	ns.apply()
}

// Isolate cuts a from each of others, both ways.
func (ns *NS) Isolate(a string, others ...string) {
	ns.t.Helper()
	ns.check(append([]string{a}, others...)...)
	ns.mu.Lock()
	for _, o := range others {
		ns.cuts[[2]string{a, o}] = true
		ns.cuts[[2]string{o, a}] = true
	}
	ns.mu.Unlock()
	ns.apply()
}

// Loss drops percent of all packets in the namespace at random (0: none), on every link
// in both directions.
func (ns *NS) Loss(percent int) {
	ns.t.Helper()
	if percent < 0 || percent > 100 {
		ns.t.Fatalf("netfault: loss %d%%: want 0 to 100", percent)
	}
	ns.mu.Lock()
	ns.lossP = percent
	ns.mu.Unlock()
	ns.apply()
}

// delayQueueNum is the NFQUEUE number of the delay queue (queues are per namespace).
const delayQueueNum = 1

// Delay holds every packet in the namespace for base ± jitter (uniform) before it goes
// on, in both directions of every link; Delay(0, 0) ends it. It needs iptables-legacy
// (scripts/netfault-deps.sh) and skips the test without it. Packets are delayed in this
// process (NFQUEUE), so a heavily loaded test machine adds its own latency on top.
func (ns *NS) Delay(base, jitter time.Duration) {
	ns.t.Helper()
	if base < 0 || jitter < 0 || jitter > base {
		ns.t.Fatalf("netfault: delay %v ± %v: want 0 <= jitter <= base", base, jitter)
	}
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if base == 0 {
		ns.delayOff()
		return
	}
	if _, err := exec.LookPath("iptables-legacy"); err != nil {
		ns.t.Skip("netfault: delay needs iptables-legacy (run scripts/netfault-deps.sh)")
	}
	if ns.queue == nil {
		q, err := openDelayQueue("/run/netns/"+ns.name, delayQueueNum)
		if err != nil {
			ns.t.Fatalf("netfault: %v", err)
		}
		ns.queue = q
		ns.t.Cleanup(func() {
			ns.mu.Lock()
			defer ns.mu.Unlock()
			ns.delayOff()
			q.close()
		})
	}
	ns.queue.set(base, jitter)
	if !ns.rule {
		ns.exec("iptables-legacy", "-A", "OUTPUT", "-j", "NFQUEUE", "--queue-num", strconv.Itoa(delayQueueNum), "--queue-bypass")
		ns.rule = true
	}
}

// delayOff removes the NFQUEUE rule; packets already held go on after their delay. The
// caller holds mu.
func (ns *NS) delayOff() {
	ns.t.Helper()
	if ns.rule {
		ns.exec("iptables-legacy", "-D", "OUTPUT", "-j", "NFQUEUE", "--queue-num", strconv.Itoa(delayQueueNum), "--queue-bypass")
		ns.rule = false
	}
}

// Heal removes every cut, the loss and the delay.
func (ns *NS) Heal() {
	ns.t.Helper()
	ns.mu.Lock()
	ns.cuts = map[[2]string]bool{}
	ns.lossP = 0
	ns.delayOff()
	ns.mu.Unlock()
	ns.apply()
}

// Ruleset returns the namespace's nftables rules, for a test's log.
func (ns *NS) Ruleset() string {
	ns.t.Helper()
	return ns.exec("nft", "list", "ruleset")
}

// check fails the test unless every address is an IPv4 literal (the rules match "ip
// saddr/daddr", and nothing else may reach the nft script).
func (ns *NS) check(addrs ...string) {
	ns.t.Helper()
	for _, a := range addrs {
		if ip := net.ParseIP(a); ip == nil || ip.To4() == nil {
			ns.t.Fatalf("netfault: %q is not an IPv4 address", a)
		}
	}
}

// apply replaces the fault table with one built from the current cuts and loss, in one
// nft transaction (no moment with half the rules).
func (ns *NS) apply() {
	ns.t.Helper()
	ns.mu.Lock()
	script := ns.script()
	ns.mu.Unlock()
	cmd := ns.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		ns.t.Fatalf("netfault: nft -f in %s: %v: %s\nscript:\n%s", ns.name, err, out, script)
	}
}

// script is the nft input for the current faults; the caller holds mu.
func (ns *NS) script() string {
	var b bytes.Buffer
	// "add" then "delete" makes the delete succeed whether the table existed or not.
	fmt.Fprintf(&b, "add table inet %s\ndelete table inet %s\n", table, table)
	fmt.Fprintf(&b, "table inet %s {\n\tchain output {\n\t\ttype filter hook output priority 0; policy accept;\n", table)
	for pair := range ns.cuts {
		fmt.Fprintf(&b, "\t\tip saddr %s ip daddr %s drop\n", pair[0], pair[1])
	}
	if ns.lossP == 100 {
		b.WriteString("\t\tdrop\n")
	} else if ns.lossP > 0 {
		fmt.Fprintf(&b, "\t\tnumgen random mod 100 < %d drop\n", ns.lossP)
	}
	b.WriteString("\t}\n}\n")
	return b.String()
}

// exec runs a command inside the namespace and returns its output, failing the test on
// error.
func (ns *NS) exec(name string, args ...string) string {
	ns.t.Helper()
	out, err := ns.Command(name, args...).CombinedOutput()
	if err != nil {
		ns.t.Fatalf("netfault: %s %s in %s: %v: %s", name, strings.Join(args, " "), ns.name, err, out)
	}
	return string(out)
}

func run(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}
