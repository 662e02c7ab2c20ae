package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/pmgcm/pmgcm/api"
)

// OpsAPI is the part of the daemon's API that check and maintenance use.
type OpsAPI interface {
	Check(ctx context.Context, verify bool, progress func(api.CheckProgress)) (*api.CheckReport, error)
	Maintenance(ctx context.Context, on bool, cid uint64) (*api.MaintenanceResponse, error)
}

// errDiffer is the error of a check that found differences: exit 1.
var errDiffer = errors.New("the replicas differ")

func (a *app) checkCmd() *cobra.Command {
	var output outputFormat
	var verify bool
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Check that every node holds the same configuration and mail",
		Long: `Prove that the replicas agree. The configuration of every node is compared at one
applied index (a SHA-256 of each node's state machine at the master's index), and the
quarantine of every node: each live message present, with the same SHA-256 and state,
and its body on disk (present, of the right size; with --verify-bodies re-hashed).

Each node digests its own messages in 256 buckets; only buckets whose digests differ
are listed and compared message by message, twice, a moment apart, so that mail still
being replicated is not reported. Messages about to be purged by retention are left out.

Every difference is printed with the node it is on and the command that repairs it.
Exit status: 0 when every node agrees, 1 when anything differs or a node could not be
compared. Cheap enough for cron: an index read and a stat per message on each node
(--verify-bodies reads every body instead). On a terminal a progress line shows how
far it got; --timeout does not bound it.`,
		Example: "  pmgcm check\n  pmgcm check -o json\n  pmgcm check --verify-bodies",
		Args:    posArgs(),
		RunE: a.runLongE(func(ctx context.Context, c API, _ []string) error {
			o, ok := c.(OpsAPI)
			if !ok {
				return errors.New("this client cannot run checks")
			}
			var p *progress
			if output != outputJSON && a.stderrTTY {
				p = &progress{w: a.stderr, live: true}
			}
			return runCheck(ctx, o, verify, output, a.stdout, p)
		}),
	}
	cmd.Flags().BoolVar(&verify, "verify-bodies", false, "re-hash every message body on every node (reads the whole quarantine)")
	addOutputFlag(cmd, &output)
	return cmd
}

// runCheck runs the check and prints its report; p, if not nil, shows the progress.
func runCheck(ctx context.Context, c OpsAPI, verify bool, output outputFormat, w io.Writer, p *progress) error {
	var show func(api.CheckProgress)
	if p != nil {
		show = func(cp api.CheckProgress) { p.show(checkProgressLine(cp)) }
	}
	rep, err := c.Check(ctx, verify, show)
	if p != nil {
		p.end()
	}
	if err != nil {
		return err
	}
	if output == outputJSON {
		if err := writeJSON(w, rep); err != nil {
			return err
		}
	} else if err := printCheck(w, rep); err != nil {
		return err
	}
	if !rep.Consistent {
		return fmt.Errorf("%w: %d difference(s), each with its repair above", errDiffer, len(rep.Differences))
	}
	return nil
}

func checkProgressLine(p api.CheckProgress) string {
	switch p.Phase {
	case "config":
		return fmt.Sprintf("check: configuration of %d nodes", p.Nodes)
	case "recheck":
		return "check: looking again at the messages that differ"
	}
	line := fmt.Sprintf("check: mail: %d", p.Checked)
	if p.Total > 0 {
		line += fmt.Sprintf(" of %d", p.Total)
	}
	return line + fmt.Sprintf(" messages here, %d of %d nodes done", p.NodesDone, p.Nodes)
}

// printCheck prints the report for the operator.
func printCheck(w io.Writer, rep *api.CheckReport) error {
	agree := 0
	var sum string
	messages := 0
	for _, n := range rep.Nodes {
		if n.Error == "" {
			agree++
			if sum == "" {
				sum = n.ConfigSHA256
			}
			messages = max(messages, n.Messages)
		}
	}
	bodies := "present with the right size (--verify-bodies re-hashes them)"
	if rep.Verified {
		bodies = "re-hashed"
	}
	configDiffs, mailDiffs := 0, 0
	for _, d := range rep.Differences {
		switch d.What {
		case "config":
			configDiffs++
		case "mail":
			mailDiffs++
		}
	}
	if len(sum) > 12 {
		sum = sum[:12]
	}
	fmt.Fprintf(w, "configuration: %d of %d nodes compared at index %d, %d differ (sha256 %s)\n",
		agree, len(rep.Nodes), rep.Index, configDiffs, sum)
	fmt.Fprintf(w, "mail: %d messages on %d nodes compared, bodies %s: %d differences\n", messages, agree, bodies, mailDiffs)
	if !rep.Since.IsZero() {
		fmt.Fprintf(w, "      (messages received before %s, due for retention, left out)\n", rep.Since.Format(time.RFC3339))
	}
	for _, d := range rep.Differences {
		fmt.Fprintf(w, "DIFFERS %s (cid %d): %s\n  repair: %s\n", d.Node, d.CID, d.Detail, d.Repair)
	}
	verdict := "consistent"
	if !rep.Consistent {
		verdict = "NOT consistent"
	}
	_, err := fmt.Fprintf(w, "%s (%.1fs)\n", verdict, rep.DurationSeconds)
	return err
}

func (a *app) maintenanceCmd() *cobra.Command {
	var cid uint64
	cmd := &cobra.Command{
		Use:   "maintenance on|off",
		Short: "Take a node out of service for work on it, or back",
		Long: `Take a node out of service (on) for work on it, or put it back (off).

In maintenance a node closes its SMTP listener, so that senders use the other MX
records (or the load balancer's other targets); it hands mastership over if it has it,
and hands it over at once whenever an election makes it master again; pmgcm promote is
refused on it. It stays a voter and keeps receiving the configuration and the mail of
the other nodes. pmgcm status shows it in state M. The mode is kept in the node's own
data directory: it survives a restart of the node, until pmgcm maintenance off.

--cid N does it for another node, which is asked over the cluster port.`,
		Example: "  pmgcm maintenance on\n  pmgcm maintenance off --cid 3",
		Args: func(cmd *cobra.Command, args []string) error {
			if err := posArgs("on|off")(cmd, args); err != nil {
				return err
			}
			if args[0] != "on" && args[0] != "off" {
				return usageErrorf("say on or off, not %q", args[0])
			}
			return nil
		},
		ValidArgs: []string{"on", "off"},
		RunE: a.runE(func(ctx context.Context, c API, args []string) error {
			o, ok := c.(OpsAPI)
			if !ok {
				return errors.New("this client cannot set maintenance")
			}
			return runMaintenance(ctx, o, args[0] == "on", cid, a.stdout, a.stderr)
		}),
	}
	cmd.Flags().Uint64Var(&cid, "cid", 0, "the node to change (default: this one)")
	return cmd
}

func runMaintenance(ctx context.Context, c OpsAPI, on bool, cid uint64, w, stderr io.Writer) error {
	res, err := c.Maintenance(ctx, on, cid)
	if err != nil {
		return err
	}
	if on {
		fmt.Fprintf(w, "%s (cid %d) is in maintenance: SMTP intake closed, it does not stay master\n", res.Name, res.CID)
		if res.HandedOver != 0 {
			fmt.Fprintf(w, "mastership handed over to cid %d\n", res.HandedOver)
		}
	} else {
		fmt.Fprintf(w, "%s (cid %d) is back in service\n", res.Name, res.CID)
	}
	if res.Warning != "" {
		fmt.Fprintf(stderr, "warning: %s\n", res.Warning)
	}
	return nil
}
