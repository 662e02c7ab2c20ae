// Command pmgcm-docs writes the manual pages of pmgcm (section 1, one page per command)
// and pmgclusterd (section 8), rendered from the commands' own help so that they never
// drift from it: `make man` runs it into bin/man, `make install` installs what it wrote.
//
//	pmgcm-docs [-dir DIR]   writes DIR/man1/pmgcm*.1 and DIR/man8/pmgclusterd.8
//
// SOURCE_DATE_EPOCH, when set, fixes the date in the pages (reproducible builds).
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"

	"github.com/pmgcm/pmgcm/cli"
	"github.com/pmgcm/pmgcm/cmd/pmgclusterd/command"
)

func main() {
	dir := flag.String("dir", "man", "directory to write man1/ and man8/ into")
	flag.Parse()
	if flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: pmgcm-docs [-dir DIR]")
		os.Exit(2)
	}
	if err := generate(*dir); err != nil {
		fmt.Fprintf(os.Stderr, "pmgcm-docs: %v\n", err)
		os.Exit(1)
	}
}

// generate writes the pages into dir/man1 and dir/man8.
func generate(dir string) error {
	pages := []struct {
		cmd     *cobra.Command
		section string
	}{
		{cli.DocCommand(), "1"},
		{command.New(io.Discard), "8"},
	}
	for _, p := range pages {
		out := filepath.Join(dir, "man"+p.section)
		if err := os.MkdirAll(out, 0o755); err != nil {
			return err
		}
		p.cmd.DisableAutoGenTag = true
		header := &doc.GenManHeader{Section: p.section, Source: "pmgcm " + cli.Version, Manual: "pmgcm manual"}
		if err := doc.GenManTree(p.cmd, header, out); err != nil {
			return fmt.Errorf("writing the pages of %s: %w", p.cmd.Name(), err)
		}
	}
	return nil
}
