package testutil

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

func blockOf(t *testing.T, ip string) int {
	t.Helper()
	parts := strings.Split(ip, ".")
	if len(parts) != 4 || parts[0] != "127" || parts[1] != "0" {
		t.Fatalf("%q is not a 127.0.x.y address", ip)
	}
	b, err := strconv.Atoi(parts[2])
	if err != nil || b < firstBlock || b > lastBlock {
		t.Fatalf("%q: block outside %d-%d", ip, firstBlock, lastBlock)
	}
	return b
}

func TestIPsAreDistinctAndBindable(t *testing.T) {
	// More than a block's worth, so the allocator claims a second block.
	ips := append(IPs(3), IPs(perBlock)...)
	seen := map[string]bool{}
	for _, ip := range ips {
		blockOf(t, ip)
		if seen[ip] {
			t.Fatalf("%s handed out twice", ip)
		}
		seen[ip] = true
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(ips[len(ips)-1], "0"))
	if err != nil {
		t.Fatal(err)
	}
	_ = ln.Close()
}

// childEnv makes the test binary, run again by TestIPsDisjointAcrossProcesses, the other
// process: it starts at the block the parent holds and prints the addresses it got.
const childEnv = "PMGCM_TESTUTIL_CHILD_START_BLOCK"

func TestIPsDisjointAcrossProcesses(t *testing.T) {
	if s := os.Getenv(childEnv); s != "" {
		b, _ := strconv.Atoi(s)
		addrMu.Lock()
		cursor = b - firstBlock
		addrMu.Unlock()
		fmt.Println("IPS", strings.Join(IPs(3), " "))
		return
	}
	parent := blockOf(t, IPs(1)[0])
	addrMu.Lock()
	held := block
	addrMu.Unlock()
	cmd := exec.Command(os.Args[0], "-test.run=^TestIPsDisjointAcrossProcesses$", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv+"="+strconv.Itoa(held))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	var got []string
	for _, line := range strings.Split(string(out), "\n") {
		if rest, ok := strings.CutPrefix(line, "IPS "); ok {
			got = strings.Fields(rest)
		}
	}
	if len(got) != 3 {
		t.Fatalf("child printed no addresses:\n%s", out)
	}
	for _, ip := range got {
		if b := blockOf(t, ip); b == held || b == parent {
			t.Fatalf("the child got %s, in block %d that this process holds", ip, b)
		}
	}
}

func TestFreePorts(t *testing.T) {
	ips := IPs(3)
	ports, err := FreePorts(ips, 3)
	if err != nil {
		t.Fatal(err)
	}
	if ports[0] == ports[1] || ports[1] == ports[2] || ports[0] == ports[2] {
		t.Fatalf("ports %v are not distinct", ports)
	}
	for _, ip := range ips {
		ln, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(ports[0])))
		if err != nil {
			t.Fatalf("port %d not free on %s: %v", ports[0], ip, err)
		}
		defer ln.Close()
	}
	// A port in use on one of the addresses is never handed out.
	taken, err := net.Listen("tcp", net.JoinHostPort(ips[1], "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	busy := taken.Addr().(*net.TCPAddr).Port
	for i := 0; i < 20; i++ {
		if p := FreePort(t, ips); p == busy {
			t.Fatalf("port %d is in use on %s", p, ips[1])
		}
	}
}
