package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/pmgcm/pmgcm/cli"
	"github.com/pmgcm/pmgcm/cmd/pmgclusterd/command"
)

// readPage returns a man page with roff's escaped dashes made plain.
func readPage(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.ReplaceAll(string(b), `\-`, "-")
}

func TestManPages(t *testing.T) {
	dir := t.TempDir()
	if err := generate(dir); err != nil {
		t.Fatal(err)
	}
	// pmgcm(1) and one page per command, each with its flags; every page of a parent
	// points at its subcommands.
	var walk func(c *cobra.Command)
	n := 0
	walk = func(c *cobra.Command) {
		if !c.IsAvailableCommand() && c.HasParent() {
			return
		}
		n++
		page := readPage(t, filepath.Join(dir, "man1", strings.ReplaceAll(c.CommandPath(), " ", "-")+".1"))
		if !strings.Contains(page, `.TH "`+strings.ToUpper(strings.ReplaceAll(c.CommandPath(), " ", "-"))+`" "1"`) {
			t.Errorf("%s: no section 1 title", c.CommandPath())
		}
		if !strings.Contains(page, c.Short) {
			t.Errorf("%s: page lacks its short help %q", c.CommandPath(), c.Short)
		}
		c.NonInheritedFlags().VisitAll(func(f *pflag.Flag) {
			if !f.Hidden && !strings.Contains(page, "--"+f.Name) {
				t.Errorf("%s: page lacks --%s", c.CommandPath(), f.Name)
			}
		})
		for _, sub := range c.Commands() {
			if sub.IsAvailableCommand() {
				if !strings.Contains(page, strings.ReplaceAll(sub.CommandPath(), " ", "-")+"(1)") {
					t.Errorf("%s: page does not refer to %s", c.CommandPath(), sub.CommandPath())
				}
				walk(sub)
			}
		}
	}
	walk(cli.DocCommand())
	for _, name := range []string{"join", "join-cmd", "status", "delete", "promote", "sync", "config-get", "quarantine-list", "backup", "restore", "check", "maintenance"} {
		if _, err := os.Stat(filepath.Join(dir, "man1", "pmgcm-"+name+".1")); err != nil {
			t.Errorf("no page for pmgcm %s: %v", name, err)
		}
	}
	if files, _ := filepath.Glob(filepath.Join(dir, "man1", "*.1")); len(files) != n {
		t.Errorf("%d pages in man1, want %d", len(files), n)
	}
	if !strings.Contains(readPage(t, filepath.Join(dir, "man1", "pmgcm.1")), "pmgcm completion bash") {
		t.Error("pmgcm(1) does not say how to get shell completion")
	}

	// pmgclusterd(8) has every flag but the hidden ones, and says how the config file works.
	page := readPage(t, filepath.Join(dir, "man8", "pmgclusterd.8"))
	if !strings.Contains(page, `.TH "PMGCLUSTERD" "8"`) || !strings.Contains(page, "--print-config") {
		t.Errorf("pmgclusterd.8:\n%s", page)
	}
	command.New(io.Discard).Flags().VisitAll(func(f *pflag.Flag) {
		if f.Hidden == strings.Contains(page, "--"+f.Name) {
			t.Errorf("pmgclusterd(8): --%s hidden %v, on the page %v", f.Name, f.Hidden, !f.Hidden)
		}
	})
}
