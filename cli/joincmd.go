package cli

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"
)

func (a *app) joinCmdCmd() *cobra.Command {
	var rotate bool
	var output outputFormat
	cmd := &cobra.Command{
		Use:   "join-cmd",
		Short: "Print the command that joins a new node to this cluster",
		Long: `Print, on a member of the cluster, the command that joins a new node:

  pmgcm join <master_ip> --fingerprint <FP> --token <TOKEN>

Run it on the new node. The fingerprint identifies the master's certificate, so that the
new node cannot be tricked into joining another host. The token admits any node that can
reach the master: keep it secret, like a password.

--rotate replaces the token first, so that the old one no longer works (for instance when it
may have leaked, or once the new nodes have joined). With -o json, print the master, the
fingerprint, the token and the whole command as JSON.`,
		Args: posArgs(),
		RunE: a.runE(func(ctx context.Context, c API, _ []string) error {
			return runJoinCmd(ctx, c, rotate, output, a.stdout, a.stderr)
		}),
	}
	cmd.Flags().BoolVar(&rotate, "rotate", false, "replace the join token first; the old token stops working")
	addOutputFlag(cmd, &output)
	return cmd
}

// runJoinCmd prints the join command, or the api.JoinCmd as JSON; with rotate it first
// replaces the token and says so on stderr.
func runJoinCmd(ctx context.Context, c API, rotate bool, output outputFormat, stdout, stderr io.Writer) error {
	jc, err := c.JoinCmd(ctx, rotate)
	if err != nil {
		return err
	}
	if rotate {
		fmt.Fprintln(stderr, "join token rotated; the old token no longer works")
	}
	if output == outputJSON {
		return writeJSON(stdout, jc)
	}
	line := jc.Command
	if line == "" {
		line = fmt.Sprintf("pmgcm join %s --fingerprint %s --token %s", jc.Master, jc.Fingerprint, jc.Token)
	}
	_, err = fmt.Fprintln(stdout, line)
	return err
}
