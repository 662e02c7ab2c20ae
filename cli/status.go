package cli

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/pmgcm/pmgcm/api"
)

// statusHeader is the header of the status table, as in the pmgcm(1) manual.
const statusHeader = "NAME(CID)--------------IPADDRESS----ROLE-STATE---------UPTIME---LOAD----MEM---DISK"

// statusRow lays out one node so that the right-aligned numbers end under the last letter of
// their header word; it is the format of the original tool, so long names and addresses push
// the row right rather than being cut.
const statusRow = "%-20s %-15s %-6s %1s %15s %6s %6s %6s\n"

// statusOptions are the flags of `pmgcm status`.
type statusOptions struct {
	listSingleNode bool
	output         outputFormat
}

func (a *app) statusCmd() *cobra.Command {
	var opts statusOptions
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the status of every cluster node",
		Long: `Show the status of every cluster node: name and CID, IP address, role (master or
node), state (A active, S syncing, D down), uptime, load, memory and disk use. Under
the table: the cluster version (the feature level every member supports) and each
node's build version ("-" when it is down, "<=0.1.0" for a node of release 0.1.0); in
-o json they are cluster.version and nodes[].version, nodes[].level.

A node outside any cluster prints "no cluster defined", or with --list-single-node its
own row.`,
		Args: posArgs(),
		RunE: a.runE(func(ctx context.Context, c API, _ []string) error {
			return runStatus(ctx, c, opts, a.stdout)
		}),
	}
	cmd.Flags().BoolVar(&opts.listSingleNode, "list-single-node", false, "list the local node even when it is in no cluster")
	addOutputFlag(cmd, &opts.output)
	return cmd
}

// runStatus prints the status table, or the api.Status as JSON.
func runStatus(ctx context.Context, c API, opts statusOptions, w io.Writer) error {
	st, err := c.Status(ctx)
	if err != nil {
		return err
	}
	if st == nil {
		st = &api.Status{}
	}
	out := *st
	if out.Cluster == nil && !opts.listSingleNode {
		out.Nodes = nil
	}
	if out.Nodes == nil {
		out.Nodes = []api.Node{}
	}
	if opts.output == outputJSON {
		return writeJSON(w, out)
	}
	if out.Cluster == nil && !opts.listSingleNode {
		_, err := fmt.Fprintln(w, "no cluster defined")
		return err
	}
	return writeStatusTable(w, &out)
}

// writeStatusTable prints the table of st's nodes sorted by CID, then one line per down
// node with its error, then the cluster warnings.
func writeStatusTable(w io.Writer, st *api.Status) error {
	nodes := slices.Clone(st.Nodes)
	slices.SortStableFunc(nodes, func(x, y api.Node) int { return cmp.Compare(x.CID, y.CID) })

	var b strings.Builder
	b.WriteString(statusHeader + "\n")
	for _, n := range nodes {
		uptime, load, mem, disk := "-", "-", "-", "-"
		if n.Sys != nil && n.State != api.StateDown {
			uptime = formatUptime(n.Sys.UptimeSeconds)
			load = strconv.FormatFloat(n.Sys.Load1, 'f', 2, 64)
			mem = formatPercent(n.Sys.MemPercent)
			disk = formatPercent(n.Sys.DiskPercent)
		}
		fmt.Fprintf(&b, statusRow, fmt.Sprintf("%s(%d)", n.Name, n.CID), n.IP,
			orDash(n.Role), orDash(n.State), uptime, load, mem, disk)
	}
	for _, n := range nodes {
		if n.State != api.StateDown {
			if n.Reason != "" {
				fmt.Fprintf(&b, "cid %d (%s): %s\n", n.CID, n.Name, oneLine(n.Reason))
			}
			continue
		}
		msg := oneLine(n.Error)
		if msg == "" {
			msg = "down"
		}
		fmt.Fprintf(&b, "cid %d (%s): %s\n", n.CID, n.Name, msg)
	}
	if line := versionsLine(st, nodes); line != "" {
		b.WriteString(line + "\n")
	}
	if st.Cluster != nil {
		for _, warn := range st.Cluster.Warnings {
			fmt.Fprintf(&b, "warning: %s\n", oneLine(warn))
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// versionsLine is the line under the table with the cluster version and each node's
// build version ("-" when it is down), or "" from a daemon that reports no cluster version
// (release 0.1.0).
func versionsLine(st *api.Status, nodes []api.Node) string {
	if st.Cluster == nil || st.Cluster.Version == 0 {
		return ""
	}
	vs := make([]string, 0, len(nodes))
	for _, n := range nodes {
		vs = append(vs, fmt.Sprintf("%s(%d) %s", n.Name, n.CID, orDash(n.Version)))
	}
	return fmt.Sprintf("cluster version %d; versions: %s", st.Cluster.Version, strings.Join(vs, ", "))
}

// formatUptime formats seconds like the manual: "21:18" (HH:MM) under a day, then
// "1 day 21:18", "3 days 04:05".
func formatUptime(seconds float64) string {
	s := int64(0)
	if seconds > 0 {
		s = int64(seconds)
	}
	days, hours, mins := s/86400, s%86400/3600, s%3600/60
	switch days {
	case 0:
		return fmt.Sprintf("%02d:%02d", hours, mins)
	case 1:
		return fmt.Sprintf("1 day %02d:%02d", hours, mins)
	}
	return fmt.Sprintf("%d days %02d:%02d", days, hours, mins)
}

// formatPercent formats a percentage as a whole number rounded half up, e.g. "80%".
func formatPercent(p float64) string {
	return strconv.FormatInt(int64(math.Floor(p+0.5)), 10) + "%"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// oneLine joins the lines of a message so that a table stays one row per line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
