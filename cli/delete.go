package cli

import (
	"context"
	"fmt"
	"io"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/pmgcm/pmgcm/api"
)

// deleteHints say what to do about the daemon's delete errors when it gave no hint itself.
var deleteHints = map[string]string{
	api.CodeNotFound: "list the nodes and their CIDs with pmgcm status",
}

func (a *app) deleteCmd() *cobra.Command {
	var output outputFormat
	cmd := &cobra.Command{
		Use:   "delete CID",
		Short: "Remove a node from the cluster",
		Long: `Remove the node with the unique cluster node ID CID, as listed with pmgcm status, from
the cluster: from its membership and from the Raft configuration. The other nodes refuse
its certificate at once.

Please detach the node from the cluster network (or shut it down) before removing it from
the cluster configuration. To bring it back later, join it again with pmgcm join, which
destroys its data.

With -o json, print the removed node's cid, name and ip as JSON.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if err := posArgs("CID")(cmd, args); err != nil {
				return err
			}
			_, err := parseCID(args[0])
			return err
		},
		RunE: a.runE(func(ctx context.Context, c API, args []string) error {
			cid, _ := parseCID(args[0])
			return runDelete(ctx, c, cid, output, a.stdout)
		}),
	}
	addOutputFlag(cmd, &output)
	return cmd
}

// parseCID parses a CID: a positive decimal integer.
func parseCID(s string) (uint64, error) {
	cid, err := strconv.ParseUint(s, 10, 64)
	if err != nil || cid == 0 {
		return 0, usageErrorf("bad CID %q: want a positive integer, as listed with pmgcm status", s)
	}
	return cid, nil
}

// runDelete removes the node and prints "deleted cid <N> (<name>, <ip>)", or the
// api.DeleteResponse as JSON.
func runDelete(ctx context.Context, c API, cid uint64, output outputFormat, w io.Writer) error {
	r, err := c.Delete(ctx, cid)
	if err != nil {
		return withHint(err, deleteHints)
	}
	if output == outputJSON {
		return writeJSON(w, r)
	}
	_, err = fmt.Fprintf(w, "deleted cid %d (%s, %s)\n", r.CID, orDash(r.Name), orDash(r.IP))
	return err
}
