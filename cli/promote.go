package cli

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/pmgcm/pmgcm/api"
)

// forcePromote is the warning and question of `pmgcm promote --force`.
var forcePromote = forcedAction{
	headline:  "a forced promotion is only for a master (and quorum) lost for good.",
	prompt:    "Force this node to be the master? [y/N]: ",
	cancelled: "promote cancelled: nothing was changed",
}

// promoteHints say what to do about the daemon's promote errors when it gave no hint itself.
var promoteHints = map[string]string{
	api.CodeNoQuorum: "if the other voters are lost for good, force it with 'pmgcm promote --force' " +
		"(read 'pmgcm promote --help' first); if they are only cut off, reconnect them instead",
	api.CodeBehind: "another survivor has a longer committed log: run 'pmgcm promote --force' on that node instead, or its writes are lost",
	api.CodeFenced: "this node was superseded by a forced promotion: run " +
		"'pmgcm sync --master_ip <the new master's IP>' to bring it back",
}

// promoteOptions are the flags of `pmgcm promote`.
type promoteOptions struct {
	force  bool
	yes    bool
	output outputFormat
}

func (a *app) promoteCmd() *cobra.Command {
	var opts promoteOptions
	cmd := &cobra.Command{
		Use:   "promote",
		Short: "Make this node the master (--force after a master failure)",
		Long: `Make this node the master of the cluster.

While the master is alive, the master role moves to this node and the old master goes
on as a node; a node that does not vote yet is made a voter first. pmgcm returns once
this node is the master. Run on the master itself, it changes nothing.

Master failure: when the master fails but a majority of the voting nodes is still up,
the cluster elects a new master by itself within seconds, and a node that comes back
catches up by itself: there is nothing to do. When the quorum is lost with the master
(a 2-node cluster whose master died, or a majority of the voters dead), pmgcm promote
refuses and says why. If those nodes are lost for good, recover as in the manual's
Disaster Recovery:

  1. force another node to be master: on the survivor, run
       pmgcm promote --force
  2. tell the other nodes that the master has changed: on each of them, once it is
     back, run, with the IP address of the node promoted in step 1:
       pmgcm sync --master_ip <master_ip>

With --force this node becomes the only voter and starts a new cluster epoch. Every
other member is fenced: even if the old members come back together, they can neither
elect a master nor accept a write until 'pmgcm sync --master_ip' re-admits them, with
their CID, name and mail data kept. The daemon refuses when another reachable survivor
has a longer committed log, and names it: promote that one instead.

Never force while the other voters may be alive but cut off from this node only: that
makes a second master (split brain). Check first: run 'pmgcm status' on the other nodes,
or check that they are powered off or unreachable from every node, not only from this
one. pmgcm prints this warning before it acts; on a terminal it then asks for
confirmation unless --yes is given. Off a terminal, --force itself is the consent.

With -o json, print the result as JSON: cid, name, already_master, forced, epoch and
fenced (the CIDs left behind).`,
		Example: `  pmgcm promote
  pmgcm promote --force`,
		Args: posArgs(),
		RunE: a.runLongE(func(ctx context.Context, c API, _ []string) error {
			return a.runPromote(ctx, c, opts)
		}),
	}
	f := cmd.Flags()
	f.BoolVar(&opts.force, "force", false, "become the only voter of a cluster that lost its master and quorum for good")
	f.BoolVarP(&opts.yes, "yes", "y", false, "with --force: do not ask for confirmation on a terminal")
	addOutputFlag(cmd, &opts.output)
	return cmd
}

// runPromote warns and asks before a forced promotion, asks the daemon to promote this
// node, and says what became of the cluster.
func (a *app) runPromote(ctx context.Context, c API, opts promoteOptions) error {
	if opts.force {
		if err := a.confirmForce(ctx, forcePromote, opts.yes); err != nil {
			return err
		}
	}
	cctx, cancel := a.callCtx(ctx)
	r, err := c.Promote(cctx, opts.force)
	cancel()
	if err != nil {
		return withHint(err, promoteHints)
	}

	// The advice for the fenced members needs this node's IP, which only status knows.
	var fenced string
	if len(r.Fenced) > 0 {
		ip, _ := a.localIP(ctx, c)
		fenced = fencedLine(r.Fenced, ip)
	}
	if opts.output == outputJSON {
		if err := writeJSON(a.stdout, r); err != nil {
			return err
		}
		if fenced != "" {
			_, err = fmt.Fprintln(a.stderr, fenced)
		}
		return err
	}

	var b strings.Builder
	switch {
	case r.AlreadyMaster:
		fmt.Fprintf(&b, "this node is already the master (cid %d); nothing changed\n", r.CID)
	case r.Forced:
		fmt.Fprintf(&b, "node %s(%d) is now the master of epoch %d\n", r.Name, r.CID, r.Epoch)
	default:
		fmt.Fprintf(&b, "node %s(%d) is now the master\n", r.Name, r.CID)
	}
	if fenced != "" {
		b.WriteString(fenced + "\n")
	}
	_, err = fmt.Fprint(a.stdout, b.String())
	return err
}
