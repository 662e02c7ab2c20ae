package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pmgcm/pmgcm/internal/testutil"
)

// openPTY opens a pseudo-terminal pair, or skips the test where there is none.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Skipf("unlockpt: %v", err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Skipf("ptsname: %v", err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("opening the pty slave: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return m, s
}

func echoOn(t *testing.T, f *os.File) bool {
	t.Helper()
	tio, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	return tio.Lflag&unix.ECHO != 0
}

func TestTerminalDetection(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if isTerminalFile(r) || isTerminalFile(strings.NewReader("")) || isTerminalFile((*os.File)(nil)) {
		t.Error("a pipe, a reader or nil is a terminal")
	}
	if newTerminal(r, &bytes.Buffer{}) != nil || newTerminal(strings.NewReader("y\n"), &bytes.Buffer{}) != nil {
		t.Error("newTerminal made a terminal of a pipe or a reader")
	}
	_, slave := openPTY(t)
	if !isTerminalFile(slave) || newTerminal(slave, &bytes.Buffer{}) == nil {
		t.Error("a pty is not a terminal")
	}
}

func TestTTYReadSecret(t *testing.T) {
	master, slave := openPTY(t)
	var prompts bytes.Buffer
	term := newTerminal(slave, &prompts)
	if !echoOn(t, slave) {
		t.Fatal("echo is off to begin with")
	}

	type answer struct {
		s   string
		err error
	}
	ch := make(chan answer, 1)
	go func() {
		s, err := term.readSecret(context.Background(), "Join token: ")
		ch <- answer{s, err}
	}()
	testutil.Poll(t, "echo off", 5*time.Second, testutil.Cond(func() bool { return !echoOn(t, slave) }))
	if _, err := master.WriteString("s3cret\n"); err != nil {
		t.Fatal(err)
	}
	a := <-ch
	if a.err != nil || a.s != "s3cret" {
		t.Fatalf("readSecret = %q, %v", a.s, a.err)
	}
	if !echoOn(t, slave) {
		t.Error("echo not restored")
	}
	if prompts.String() != "Join token: \n" {
		t.Errorf("prompts = %q", prompts.String())
	}

	// An echoed line follows: what the terminal shows holds it but not the secret.
	go func() {
		s, err := term.readLine(context.Background(), "? ")
		ch <- answer{s, err}
	}()
	if _, err := master.WriteString("yes\n"); err != nil {
		t.Fatal(err)
	}
	if a := <-ch; a.err != nil || a.s != "yes" {
		t.Fatalf("readLine = %q, %v", a.s, a.err)
	}
	var shown []byte
	buf := make([]byte, 256)
	testutil.Poll(t, "the echo of yes", 5*time.Second, testutil.Cond(func() bool {
		master.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
		n, _ := master.Read(buf)
		shown = append(shown, buf[:n]...)
		return bytes.Contains(shown, []byte("yes"))
	}))
	if bytes.Contains(shown, []byte("s3cret")) {
		t.Errorf("the secret was echoed: %q", shown)
	}
}

func TestTTYReadSecretCancelled(t *testing.T) {
	_, slave := openPTY(t)
	term := newTerminal(slave, &bytes.Buffer{})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := term.readSecret(ctx, "Join token: ")
		errc <- err
	}()
	testutil.Poll(t, "echo off", 5*time.Second, testutil.Cond(func() bool { return !echoOn(t, slave) }))
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v", err)
	}
	if !echoOn(t, slave) {
		t.Error("echo not restored after Ctrl-C")
	}
}

func TestAskYes(t *testing.T) {
	for answer, want := range map[string]bool{"y": true, "Y": true, "yes": true, " Yes\t": true,
		"": false, "n": false, "no": false, "yep": false, "y es": false} {
		got, err := askYes(context.Background(), &fakeTerm{answers: []string{answer}}, "? ")
		if err != nil || got != want {
			t.Errorf("%q: %v, %v", answer, got, err)
		}
	}
	if got, err := askYes(context.Background(), &fakeTerm{}, "? "); got || err != nil {
		t.Errorf("end of input: %v, %v", got, err)
	}
}

func TestProgressLive(t *testing.T) {
	var b bytes.Buffer
	p := &progress{w: &b, live: true}
	p.show("catching up: applied index 999 of 1000")
	p.show("catching up: applied index 999 of 1000")
	p.show("catching up: applied index 5")
	p.end()
	p.end()
	want := "\rcatching up: applied index 999 of 1000" +
		"\rcatching up: applied index 5          \n"
	if b.String() != want {
		t.Errorf("got %q\nwant %q", b.String(), want)
	}
}
