package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// terminal is the operator's terminal, on which commands ask questions. env.term is nil when
// stdin is not a terminal: commands then refuse instead of asking. Tests inject a fake.
type terminal interface {
	// readLine shows prompt and reads one line, echoed; it returns the line without its
	// line ending, or io.EOF when the input ended first.
	readLine(ctx context.Context, prompt string) (string, error)
	// readSecret is readLine with echo turned off while the operator types.
	readSecret(ctx context.Context, prompt string) (string, error)
}

// isTerminal reports whether fd is a terminal (it has termios settings).
func isTerminal(fd uintptr) bool {
	_, err := unix.IoctlGetTermios(int(fd), unix.TCGETS)
	return err == nil
}

// isTerminalFile reports whether v is an *os.File open on a terminal.
func isTerminalFile(v any) bool {
	f, ok := v.(*os.File)
	return ok && f != nil && isTerminal(f.Fd())
}

// newTerminal returns the terminal that stdin is, with prompts written to prompts, or nil
// when stdin is not an *os.File on a terminal.
func newTerminal(stdin io.Reader, prompts io.Writer) terminal {
	f, ok := stdin.(*os.File)
	if !ok || !isTerminalFile(f) {
		return nil
	}
	return &tty{fd: int(f.Fd()), in: bufio.NewReader(f), out: prompts}
}

// tty is a terminal on a file descriptor. Answers are read through one buffered reader, so
// that typed-ahead lines are not lost between questions.
type tty struct {
	fd  int
	in  *bufio.Reader
	out io.Writer
}

func (t *tty) readLine(ctx context.Context, prompt string) (string, error) {
	if _, err := io.WriteString(t.out, prompt); err != nil {
		return "", err
	}
	return t.read(ctx)
}

// readSecret turns ECHO off for the time of the read and restores the settings afterwards,
// also when ctx ends first (Ctrl-C).
func (t *tty) readSecret(ctx context.Context, prompt string) (string, error) {
	old, err := unix.IoctlGetTermios(t.fd, unix.TCGETS)
	if err != nil {
		return "", fmt.Errorf("reading terminal settings: %w", err)
	}
	quiet := *old
	quiet.Lflag &^= unix.ECHO
	quiet.Lflag |= unix.ICANON | unix.ISIG
	quiet.Iflag |= unix.ICRNL
	if err := unix.IoctlSetTermios(t.fd, unix.TCSETS, &quiet); err != nil {
		return "", fmt.Errorf("turning off terminal echo: %w", err)
	}
	defer func() {
		_ = unix.IoctlSetTermios(t.fd, unix.TCSETS, old)
		// The operator's Enter was not echoed: end the prompt's line.
		_, _ = io.WriteString(t.out, "\n")
	}()
	if _, err := io.WriteString(t.out, prompt); err != nil {
		return "", err
	}
	return t.read(ctx)
}

// read reads one line in a goroutine so that ctx can end the wait. A read abandoned that
// way stays blocked on the terminal until the process exits, which follows at once.
func (t *tty) read(ctx context.Context) (string, error) {
	type answer struct {
		line string
		err  error
	}
	ch := make(chan answer, 1)
	go func() {
		line, err := t.in.ReadString('\n')
		ch <- answer{line, err}
	}()
	select {
	case <-ctx.Done():
		return "", ctx.Err()
	case a := <-ch:
		if a.err != nil && !(errors.Is(a.err, io.EOF) && a.line != "") {
			return "", a.err
		}
		return strings.TrimRight(a.line, "\r\n"), nil
	}
}

// askYes asks a y/N question on term and reports whether the answer is y or yes (in any
// case). The end of the input counts as no.
func askYes(ctx context.Context, term terminal, prompt string) (bool, error) {
	line, err := term.readLine(ctx, prompt)
	if errors.Is(err, io.EOF) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return true, nil
	}
	return false, nil
}
