package cli

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/spf13/cobra"

	"github.com/pmgcm/pmgcm/api"
)

// DefaultSyncWait is how long `pmgcm sync` follows the catch-up unless --wait says otherwise.
const DefaultSyncWait = 2 * time.Minute

// syncHints say what to do about the daemon's sync errors when it gave no hint itself.
var syncHints = map[string]string{
	api.CodeFenced: "this node was fenced by a forced promotion on another node: run " +
		"'pmgcm sync --master_ip <the new master's IP>' (see 'pmgcm status' on that node)",
	api.CodeNotLeader: "--master_ip must name the current master: run 'pmgcm status' on a member " +
		"to find it",
	api.CodeNoQuorum: "the cluster has no master now: wait for it to elect one, or, if the master " +
		"and quorum are lost for good, see 'pmgcm promote --help'",
	api.CodeUnreachable: "check the master's IP, and that pmgclusterd runs there and is reachable " +
		"from this node",
}

// syncOptions are the flags of `pmgcm sync`.
type syncOptions struct {
	masterIP string
	wait     time.Duration
}

func (a *app) syncCmd() *cobra.Command {
	var opts syncOptions
	cmd := &cobra.Command{
		Use:   "sync [--master_ip MASTER_IP]",
		Short: "Catch up with the master now, or re-point this node at a new master",
		Long: `Bring this node in line with the master of the cluster.

Master failure: after 'pmgcm promote --force' made another node the master (see
'pmgcm promote --help'), every other member is fenced: it can neither vote nor accept a
write, and 'pmgcm status' on it says by whom it was superseded. Tell it that the master
has changed, as in the manual's Disaster Recovery, by running on it:

  pmgcm sync --master_ip <master_ip>

pmgcm checks that MASTER_IP is the master of the same cluster at a newer epoch, drops
this node's stale cluster state and has the master re-admit it, with its CID, name and
mail data kept. A node that is not fenced needs no --master_ip: pmgcm sync makes it catch
up with the master now. Given on such a node, --master_ip must name the current master.

Either way pmgcm then follows the catch-up until this node is a full member (state A),
for at most --wait (0: return as soon as the daemon has answered). If you stop waiting
(Ctrl-C), the node goes on catching up in the background: see pmgcm status. --timeout
bounds each request to the daemon, not the whole sync.`,
		Example: `  pmgcm sync --master_ip 192.168.2.127
  pmgcm sync`,
		Args: func(cmd *cobra.Command, args []string) error {
			if err := posArgs()(cmd, args); err != nil {
				return err
			}
			changed := cmd.Flags().Changed("master_ip") || cmd.Flags().Changed("master-ip")
			if changed && net.ParseIP(opts.masterIP) == nil {
				return usageErrorf("bad --master_ip %q: want the IP address of the master "+
					"(192.168.2.127, fd00::1)", opts.masterIP)
			}
			if opts.wait < 0 {
				return usageErrorf("--wait must not be negative")
			}
			return nil
		},
		RunE: a.runLongE(func(ctx context.Context, c API, _ []string) error {
			return a.runSync(ctx, c, opts)
		}),
	}
	f := cmd.Flags()
	f.StringVar(&opts.masterIP, "master_ip", "", "the `MASTER_IP` of the new master, to re-admit this node after a forced promotion")
	f.DurationVar(&opts.wait, "wait", DefaultSyncWait, "follow the catch-up for at most `DURATION` (0: do not follow)")
	// --master-ip is a hidden alias of the manual's --master_ip, for the spelling of the
	// other flags.
	f.StringVar(&opts.masterIP, "master-ip", "", "alias of --master_ip")
	_ = f.MarkHidden("master-ip")
	return cmd
}

// runSync asks the daemon to sync (or re-admit) this node and follows the catch-up.
func (a *app) runSync(ctx context.Context, c API, opts syncOptions) error {
	cctx, cancel := a.callCtx(ctx)
	r, err := c.Sync(cctx, opts.masterIP)
	cancel()
	if err != nil {
		return withHint(err, syncHints)
	}
	if r.Readmitted {
		_, err = fmt.Fprintf(a.stdout, "re-admitted by the master (cid %d) at epoch %d\n", r.MasterCID, r.Epoch)
	} else {
		_, err = fmt.Fprintf(a.stdout, "in sync with the master (cid %d): applied index %d\n", r.MasterCID, r.AppliedIndex)
	}
	if err != nil || opts.wait == 0 {
		return err
	}
	return a.followCatchUp(ctx, c, catchUp{
		row:        func(st *api.Status) *api.Node { return syncedRow(st, r) },
		done:       "node %s(%d) is in sync: state %s\n",
		background: "catching up",
	}, opts.wait)
}

// syncedRow returns the local row once the status shows the node at the epoch it was synced
// to; nil before (a fenced node's status from before its re-admission).
func syncedRow(st *api.Status, r *api.SyncResponse) *api.Node {
	if st.Cluster == nil || st.Cluster.Epoch < r.Epoch {
		return nil
	}
	return localRow(st)
}
