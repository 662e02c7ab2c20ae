package cli

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/spf13/cobra"
)

// ReportAPI is the part of the daemon's API that report uses.
type ReportAPI interface {
	Report(ctx context.Context) (io.ReadCloser, error)
}

// maxReport bounds the bundle the CLI takes: a few MiB per node at most.
const maxReport = 256 << 20

func (a *app) reportCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "report FILE",
		Short: "Write a diagnostics bundle (tar.gz) from every reachable node to FILE",
		Long: `Collect what support needs to look at a problem into one tar.gz file: the status of
the cluster (as pmgcm status -o json), and from every node that answers its build and
protocol versions, Raft state and configuration, Prometheus metrics, the settings in
effect (as pmgclusterd --print-config) and its most recent log lines (the daemon keeps
the last 4,000 lines, at most 2 MiB, in memory).

No secret is in the bundle: private keys, the cluster CA key, the join token and its
salt are left out, so it can be sent on as it is. A node that does not answer is named
with the reason; a node of an older version that cannot report is recorded as "not
available (older version)".

FILE "-" writes to stdout. The file is written to a temporary name, checked and then
renamed: an interrupted report never leaves a FILE that looks complete.`,
		Example: "  pmgcm report /tmp/pmgcm-report.tar.gz\n  tar tzf /tmp/pmgcm-report.tar.gz",
		Args:    posArgs("FILE"),
		RunE: a.runE(func(ctx context.Context, c API, args []string) error {
			r, ok := c.(ReportAPI)
			if !ok {
				return errors.New("this client cannot fetch reports")
			}
			return runReport(ctx, r, args[0], a.stdout, a.stderr)
		}),
	}
}

// runReport writes the bundle to path (atomically) or stdout, and says what is in it.
func runReport(ctx context.Context, c ReportAPI, path string, stdout, stderr io.Writer) error {
	rc, err := c.Report(ctx)
	if err != nil {
		return err
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, maxReport+1))
	if err != nil {
		return fmt.Errorf("report incomplete, %s not written: %w", path, err)
	}
	if len(data) > maxReport {
		return fmt.Errorf("report over %d bytes, %s not written", maxReport, path)
	}
	sum, err := summarizeBundle(data)
	if err != nil {
		return fmt.Errorf("report incomplete, %s not written: %w", path, err)
	}
	if path == "-" {
		_, err := stdout.Write(data)
		return err
	}
	if err := writeFileAtomic(path, func(w io.Writer) error { _, err := w.Write(data); return err }); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "report written to %s (%d bytes, %d files)\n", path, len(data), sum.files)
	for _, n := range sum.nodes {
		fmt.Fprintf(stderr, "  %s\n", n)
	}
	return nil
}

// bundleSummary is what runReport says about a bundle.
type bundleSummary struct {
	files int
	// nodes are "NAME-cidN: collected" or "NAME-cidN: <why not>".
	nodes []string
}

// summarizeBundle reads the whole tar.gz (which checks it) and lists its nodes.
func summarizeBundle(data []byte) (bundleSummary, error) {
	var s bundleSummary
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return s, err
	}
	tr := tar.NewReader(zr)
	nodes := map[string]string{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return s, err
		}
		s.files++
		parts := strings.Split(h.Name, "/")
		if len(parts) == 4 && parts[1] == "nodes" {
			switch parts[3] {
			case "unavailable.txt":
				b, err := io.ReadAll(io.LimitReader(tr, 4096))
				if err != nil {
					return s, err
				}
				nodes[parts[2]] = strings.TrimSpace(string(b))
			case "report.json":
				if _, ok := nodes[parts[2]]; !ok {
					nodes[parts[2]] = "collected"
				}
			}
		}
		if _, err := io.Copy(io.Discard, tr); err != nil {
			return s, err
		}
	}
	if err := zr.Close(); err != nil {
		return s, err
	}
	for n, st := range nodes {
		s.nodes = append(s.nodes, n+": "+st)
	}
	sort.Strings(s.nodes)
	return s, nil
}
