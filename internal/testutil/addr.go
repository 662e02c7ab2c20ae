package testutil

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
)

// Loopback addresses come in blocks: block x is 127.0.x.1 to 127.0.x.250, for x from
// firstBlock to 254 (127.0.0.x, where the unit tests and other programs listen, is left
// alone). A process claims a block by an exclusive flock on a file in os.TempDir(), held
// until the process exits, so two go test processes at once (two packages, two developers)
// never share an address. The first block a process tries is random, so they rarely even
// contend for a lock.
const (
	firstBlock     = 10
	lastBlock      = 254
	perBlock       = 250
	portAttempts   = 200
	lockFilePrefix = "pmgcm-test-loopback-127.0."
)

var (
	addrMu    sync.Mutex
	block     int        // the block addresses come from now; 0: none claimed yet
	nextHost  int        // the next host number in block; past perBlock: block used up
	cursor    = -1       // the index (from firstBlock) of the next block to try; -1: not drawn yet
	tried     int        // blocks tried so far, claimed or not
	locks     []*os.File // the claimed blocks' lock files, open until the process exits
	usedPorts = map[int]bool{}
)

// IPs returns n loopback addresses (127.0.x.y) that no other caller of IPs gets, in this
// process or another one running at the same time. It panics if no address block is left:
// a test run cannot use up 245 blocks of 250 unless lock files are stale or unwritable.
func IPs(n int) []string {
	addrMu.Lock()
	defer addrMu.Unlock()
	ips := make([]string, n)
	for i := range ips {
		if block == 0 || nextHost > perBlock {
			claimBlock()
		}
		ips[i] = fmt.Sprintf("127.0.%d.%d", block, nextHost)
		nextHost++
	}
	return ips
}

// claimBlock locks the next block that no other process holds and makes it current; addrMu
// is held. Each block is tried once per process.
func claimBlock() {
	const span = lastBlock - firstBlock + 1
	if cursor < 0 {
		cursor = rand.IntN(span)
	}
	var lastErr error
	for tried < span {
		b := firstBlock + cursor
		cursor, tried = (cursor+1)%span, tried+1
		f, err := lockFile(filepath.Join(os.TempDir(), lockFilePrefix+strconv.Itoa(b)+".lock"))
		if err != nil {
			lastErr = err
			continue
		}
		locks = append(locks, f)
		block, nextHost = b, 1
		return
	}
	panic(fmt.Sprintf("testutil: no loopback address block 127.0.%d-%d.0 left to claim (last error: %v); "+
		"remove stale %s*.lock files from %s or set TMPDIR", firstBlock, lastBlock, lastErr, lockFilePrefix, os.TempDir()))
}

// lockFile opens path and takes an exclusive flock on it without waiting.
func lockFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o666)
	if err != nil {
		// Made by another user, without write permission for us: a read-only descriptor
		// takes a flock just as well.
		if f, err = os.Open(path); err != nil {
			return nil, err
		}
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}

// FreePorts returns count distinct TCP ports that are free on every one of ips at the time of
// the call and that no earlier call in this process returned. ips must not be empty.
func FreePorts(ips []string, count int) ([]int, error) {
	addrMu.Lock()
	defer addrMu.Unlock()
	var out []int
	for tries := 0; tries < portAttempts && len(out) < count; tries++ {
		port, err := freeOn(ips)
		if err != nil {
			return nil, err
		}
		if port != 0 && !usedPorts[port] {
			usedPorts[port] = true
			out = append(out, port)
		}
	}
	if len(out) < count {
		return nil, fmt.Errorf("no %d TCP ports free on every one of %v after %d attempts", count, ips, portAttempts)
	}
	return out, nil
}

// freeOn asks the kernel for a free port on ips[0] and checks that it is free on the others
// too; it returns 0 if it is not.
func freeOn(ips []string) (int, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(ips[0], "0"))
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	for _, ip := range ips[1:] {
		l2, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
		if err != nil {
			return 0, nil
		}
		_ = l2.Close()
	}
	return port, nil
}

// FreePort returns a TCP port free on every one of ips (see FreePorts), or fails the test.
func FreePort(t testing.TB, ips []string) int {
	t.Helper()
	ports, err := FreePorts(ips, 1)
	if err != nil {
		t.Fatal(err)
	}
	return ports[0]
}
