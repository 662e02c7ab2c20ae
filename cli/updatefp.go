package cli

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/api/client"
)

// FingerprintUpdater is the part of the API that renews node certificates. It is kept
// apart from API so that fakes of the other commands need not implement it.
type FingerprintUpdater interface {
	UpdateFingerprints(ctx context.Context, all bool) (*api.UpdateFingerprintsResponse, error)
}

var _ FingerprintUpdater = (*client.Client)(nil)

// updateFPHints say what to do about the daemon's errors when it gave no hint itself.
var updateFPHints = map[string]string{
	api.CodeNoQuorum: "a renewed certificate is published through the master: check that a majority of the voters are up (pmgcm status)",
}

func (a *app) updateFingerprintsCmd() *cobra.Command {
	var all bool
	var output outputFormat
	cmd := &cobra.Command{
		Use:   "update-fingerprints",
		Short: "Renew this node's certificate (or every node's) and publish the new fingerprints",
		Long: `Renew the certificate this node presents to the other nodes: the node keeps its key and
gets a new certificate from the cluster CA, valid for two years. The new fingerprint is
published through the Raft log; from then on the other nodes refuse the old certificate.
The daemon keeps running: connections open before go on, new ones use the new
certificate. pmgcm status warns 30 days before a node's certificate expires.

With --all, run on the master: every node renews its certificate, one after the other,
the master last. A node that cannot be reached keeps its certificate and is reported;
run update-fingerprints on it later.

pmgcm join-cmd prints the master's current fingerprint afterwards.

With -o json, print {"nodes": [{"cid", "name", "ip", "old_fingerprint", "fingerprint",
"expires", "error"}]}.`,
		Example: `  pmgcm update-fingerprints
  pmgcm update-fingerprints --all`,
		Args: posArgs(),
		RunE: a.runE(func(ctx context.Context, c API, _ []string) error {
			u, ok := c.(FingerprintUpdater)
			if !ok {
				return errors.New("this client cannot renew certificates")
			}
			return runUpdateFingerprints(ctx, u, all, output, a.stdout)
		}),
	}
	cmd.Flags().BoolVar(&all, "all", false, "on the master: renew every node's certificate")
	addOutputFlag(cmd, &output)
	return cmd
}

// runUpdateFingerprints renews and prints one line per node:
// "cid <N> (<name>, <ip>): new fingerprint <FP>, valid until <date>", or the node's error.
// It fails if any node kept its old certificate.
func runUpdateFingerprints(ctx context.Context, u FingerprintUpdater, all bool, output outputFormat, w io.Writer) error {
	r, err := u.UpdateFingerprints(ctx, all)
	if err != nil {
		return withHint(err, updateFPHints)
	}
	failed := 0
	for _, n := range r.Nodes {
		if n.Error != "" {
			failed++
		}
	}
	if output == outputJSON {
		if err := writeJSON(w, r); err != nil {
			return err
		}
	} else {
		for _, n := range r.Nodes {
			var err error
			if n.Error != "" {
				_, err = fmt.Fprintf(w, "cid %d (%s, %s): not renewed: %s\n", n.CID, orDash(n.Name), orDash(n.IP), n.Error)
			} else {
				_, err = fmt.Fprintf(w, "cid %d (%s, %s): new fingerprint %s, valid until %s\n", n.CID, orDash(n.Name), orDash(n.IP),
					n.Fingerprint, n.Expires.UTC().Format("2006-01-02"))
			}
			if err != nil {
				return err
			}
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d nodes kept their certificate: run pmgcm update-fingerprints on each of them when it is reachable", failed, len(r.Nodes))
	}
	return nil
}
