package netfault

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The helper process: the test binary run again inside the namespace, as a TCP server
// (NETFAULT_HELPER=listen ADDR) or as a client that dials from a bound address
// (NETFAULT_HELPER=dial FROM TO) and prints "ok" or the error.
func TestMain(m *testing.M) {
	switch os.Getenv("NETFAULT_HELPER") {
	case "listen":
		helperListen(os.Getenv("NETFAULT_ADDR"))
		return
	case "dial":
		helperDial(os.Getenv("NETFAULT_FROM"), os.Getenv("NETFAULT_ADDR"))
		return
	}
	os.Exit(m.Run())
}

func helperListen(addr string) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Println("listen:", err)
		os.Exit(1)
	}
	fmt.Println("listening")
	for {
		c, err := ln.Accept()
		if err != nil {
			os.Exit(1)
		}
		go func() {
			defer c.Close()
			_, _ = c.Write([]byte(c.RemoteAddr().String() + "\n"))
		}()
	}
}

func helperDial(from, addr string) {
	start := time.Now()
	d := net.Dialer{Timeout: 700 * time.Millisecond, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		fmt.Println("error:", err)
		return
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(700 * time.Millisecond))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		fmt.Println("error:", err)
		return
	}
	fmt.Println("ok", strings.TrimSpace(line), time.Since(start).Microseconds())
}

// startServer runs a helper server at addr inside ns until the test ends.
func startServer(t *testing.T, ns *NS, addr string) {
	t.Helper()
	cmd := ns.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "NETFAULT_HELPER=listen", "NETFAULT_ADDR="+addr)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "listening" {
		t.Fatalf("helper server at %s: %q %v", addr, line, err)
	}
}

// reach dials addr from the address from inside ns and returns "ok <peer>" or the error.
func reach(t *testing.T, ns *NS, from, addr string) string {
	t.Helper()
	cmd := ns.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "NETFAULT_HELPER=dial", "NETFAULT_FROM="+from, "NETFAULT_ADDR="+addr)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helper dial: %v", err)
	}
	return strings.TrimSpace(string(out))
}

func TestCutAndLoss(t *testing.T) {
	ns := New(t)
	a, b, c := "127.0.7.1", "127.0.7.2", "127.0.7.3"
	startServer(t, ns, b+":7000")
	if got := reach(t, ns, a, b+":7000"); !strings.HasPrefix(got, "ok "+a+":") {
		t.Fatalf("before any fault, %s -> %s: %q, want ok from %s", a, b, got, a)
	}
	ns.Cut(a, b)
	if got := reach(t, ns, a, b+":7000"); !strings.HasPrefix(got, "error") {
		t.Fatalf("after Cut(%s, %s): %q, want an error\n%s", a, b, got, ns.Ruleset())
	}
	if got := reach(t, ns, c, b+":7000"); !strings.HasPrefix(got, "ok ") {
		t.Fatalf("after Cut(%s, %s), %s -> %s: %q, want ok", a, b, c, b, got)
	}
	ns.Heal()
	if got := reach(t, ns, a, b+":7000"); !strings.HasPrefix(got, "ok ") {
		t.Fatalf("after Heal: %q, want ok", got)
	}
	ns.Loss(100)
	if got := reach(t, ns, c, b+":7000"); !strings.HasPrefix(got, "error") {
		t.Fatalf("with 100%% loss: %q, want an error", got)
	}
	ns.Loss(10)
	if rs := ns.Ruleset(); !strings.Contains(rs, "numgen random mod 100 < 10 drop") {
		t.Fatalf("ruleset with 10%% loss:\n%s", rs)
	}
	ns.Heal()
	if got := reach(t, ns, c, b+":7000"); !strings.HasPrefix(got, "ok ") {
		t.Fatalf("after Heal: %q, want ok", got)
	}
}

// rtt dials from inside ns and returns how long the connect and the server's first
// line took (two round trips).
func rtt(t *testing.T, ns *NS, from, addr string) time.Duration {
	t.Helper()
	got := reach(t, ns, from, addr)
	f := strings.Fields(got)
	if len(f) != 3 || f[0] != "ok" {
		t.Fatalf("dial %s: %q", addr, got)
	}
	us, err := strconv.ParseInt(f[2], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return time.Duration(us) * time.Microsecond
}

func TestDelay(t *testing.T) {
	ns := New(t)
	a, b := "127.0.8.1", "127.0.8.2"
	startServer(t, ns, b+":7000")
	before := rtt(t, ns, a, b+":7000")
	ns.Delay(50*time.Millisecond, 0)
	// Connect (SYN, SYN-ACK) and the first line (data): three delayed packets at least.
	if d := rtt(t, ns, a, b+":7000"); d < 140*time.Millisecond {
		t.Errorf("with 50ms delay, connect and first line took %v (without: %v), want >= 150ms", d, before)
	} else {
		t.Logf("connect + first line: %v without delay, %v with 50ms", before, d)
	}
	ns.Delay(20*time.Millisecond, 10*time.Millisecond)
	if d := rtt(t, ns, a, b+":7000"); d < 30*time.Millisecond {
		t.Errorf("with 20ms ± 10ms delay: %v", d)
	}
	ns.Heal()
	if d := rtt(t, ns, a, b+":7000"); d > 100*time.Millisecond {
		t.Logf("after Heal the dial took %v (a loaded machine?)", d)
	}
	if rs := ns.exec("iptables-legacy", "-S", "OUTPUT"); strings.Contains(rs, "NFQUEUE") {
		t.Errorf("NFQUEUE rule left after Heal:\n%s", rs)
	}
}

func TestNamespaceRemoved(t *testing.T) {
	if why := Available(); why != "" {
		t.Skip(why)
	}
	var name string
	t.Run("inner", func(t *testing.T) {
		name = New(t).Name()
	})
	out, err := run("ip", "netns", "list")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, name) {
		t.Fatalf("namespace %s still listed after its test ended:\n%s", name, out)
	}
}

func TestCheckRefusesNonAddresses(t *testing.T) {
	ns := &NS{t: &fatalRecorder{TB: t}}
	ns.check("127.0.0.1")
	ft := &fatalRecorder{TB: t}
	ns = &NS{t: ft}
	func() {
		defer func() { _ = recover() }()
		ns.check("127.0.0.1; flush ruleset")
	}()
	if !ft.failed {
		t.Fatal("check accepted a string that is not an address")
	}
}

// fatalRecorder records Fatalf instead of ending the test.
type fatalRecorder struct {
	testing.TB
	failed bool
}

func (f *fatalRecorder) Helper() {}
func (f *fatalRecorder) Fatalf(string, ...any) {
	f.failed = true
	panic("fatal")
}
