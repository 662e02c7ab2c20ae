package cli

import (
	"strings"
	"testing"
)

func TestCompletion(t *testing.T) {
	for shell, want := range map[string]string{"bash": "__start_pmgcm", "zsh": "#compdef pmgcm"} {
		r := runFake(t, &fakeAPI{}, "", "completion", shell)
		if r.code != ExitOK || r.stderr != "" || !strings.Contains(r.stdout, want) {
			t.Errorf("completion %s: exit %d, stderr %q, %d bytes without %q", shell, r.code, r.stderr, len(r.stdout), want)
		}
		// The script completes by asking pmgcm itself.
		if !strings.Contains(r.stdout, "__complete") {
			t.Errorf("completion %s does not call pmgcm __complete", shell)
		}
	}
	// What the scripts get: the commands, then a command's arguments and flags.
	r := runFake(t, &fakeAPI{}, "", "__complete", "")
	for _, c := range []string{"join", "join-cmd", "status", "promote", "sync", "config", "backup", "restore", "check", "maintenance"} {
		if !strings.Contains("\n"+r.stdout, "\n"+c+"\t") {
			t.Errorf("__complete lacks %s:\n%s", c, r.stdout)
		}
	}
	r = runFake(t, &fakeAPI{}, "", "__complete", "join", "--")
	if !strings.Contains(r.stdout, "--fingerprint") || !strings.Contains(r.stdout, "--token") {
		t.Errorf("__complete join --:\n%s", r.stdout)
	}
	r = runFake(t, &fakeAPI{}, "", "__complete", "maintenance", "")
	if !strings.Contains(r.stdout, "on\n") || !strings.Contains(r.stdout, "off\n") {
		t.Errorf("__complete maintenance:\n%s", r.stdout)
	}
	r = runFake(t, &fakeAPI{}, "", "__complete", "check", "--")
	if !strings.Contains(r.stdout, "--verify-bodies") || !strings.Contains(r.stdout, "--output") {
		t.Errorf("__complete check --:\n%s", r.stdout)
	}
	r = runFake(t, &fakeAPI{}, "", "__complete", "config", "")
	if !strings.Contains(r.stdout, "get\t") {
		t.Errorf("__complete config:\n%s", r.stdout)
	}
	// The completion command is not in the list of commands, but DocCommand has it.
	if c, _, err := DocCommand().Find([]string{"completion", "bash"}); err != nil || c.Name() != "bash" {
		t.Errorf("DocCommand has no completion bash: %v", err)
	}
}
