package proc

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/internal/testutil"
)

func TestStartStopAndLog(t *testing.T) {
	log := filepath.Join(t.TempDir(), "log")
	p, err := Start(exec.Command("sh", "-c", "trap 'echo bye; exit 0' TERM; echo started; while :; do sleep 0.05; done"), log)
	if err != nil {
		t.Fatal(err)
	}
	waitLog(t, log, "started")
	if p.Exited() {
		t.Fatal("exited too early")
	}
	p.Signal(syscall.SIGSTOP) // Stop must get through a pause
	if err := p.Stop(syscall.SIGTERM, 5*time.Second); err != nil || !p.Exited() || p.Err() != nil {
		t.Fatalf("Stop = %v, exited %v, err %v", err, p.Exited(), p.Err())
	}
	if b, _ := os.ReadFile(log); !strings.Contains(string(b), "bye") {
		t.Fatalf("log = %q", b)
	}
}

func TestStopKillsAfterTimeout(t *testing.T) {
	log := filepath.Join(t.TempDir(), "log")
	p, err := Start(exec.Command("sh", "-c", "trap '' TERM; echo ready; while :; do sleep 0.05; done"), log)
	if err != nil {
		t.Fatal(err)
	}
	waitLog(t, log, "ready") // SIGTERM before the trap would end the shell at once
	if err := p.Stop(syscall.SIGTERM, 200*time.Millisecond); !errors.Is(err, ErrKilled) {
		t.Fatalf("Stop = %v, want ErrKilled", err)
	}
	var nilProc *Process
	if !nilProc.Exited() || nilProc.Stop(syscall.SIGKILL, time.Second) != nil {
		t.Fatal("a nil Process must count as exited")
	}
}

// waitLog waits until the log holds want: the script has set its traps.
func waitLog(t *testing.T, log, want string) {
	t.Helper()
	testutil.Poll(t, fmt.Sprintf("%q in the log", want), 5*time.Second, func() error {
		b, _ := os.ReadFile(log)
		if !strings.Contains(string(b), want) {
			return fmt.Errorf("log: %q", b)
		}
		return nil
	})
}
