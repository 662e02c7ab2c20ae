package cli

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"
)

func (a *app) createCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "create",
		Short: "Make this node the master of a new cluster",
		Long: `Make this node the master of a new cluster, with CID 1. The node's existing data is
kept. The command prints the fingerprint of the new cluster CA, which joining nodes pin.`,
		Args: posArgs(),
		RunE: a.runE(func(ctx context.Context, c API, _ []string) error {
			return runCreate(ctx, c, a.stdout)
		}),
	}
}

// runCreate asks the daemon to create a cluster and prints its ID and fingerprint.
func runCreate(ctx context.Context, c API, w io.Writer) error {
	r, err := c.Create(ctx)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "cluster %s created; this node is master (cid %d)\nfingerprint: %s\n",
		r.ClusterID, r.CID, r.Fingerprint)
	return err
}
