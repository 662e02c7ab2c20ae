package cli

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/pmgcm/pmgcm/api"
)

func (a *app) joinCmdCmd() *cobra.Command {
	var rotate bool
	var ttl time.Duration
	var output outputFormat
	cmd := &cobra.Command{
		Use:   "join-cmd",
		Short: "Print the command that joins a new node to this cluster",
		Long: `Print, on a member of the cluster, the command that joins a new node, as its last line:

  PMGCM_JOIN_TOKEN=<TOKEN> pmgcm join <master_ip> --fingerprint <FP>

Run it on the new node. The token is passed in the environment, not on the command line,
where ps would show it to every user while the join runs. The fingerprint identifies the
master's certificate, so that the new node cannot be tricked into joining another host.
The token admits any node that can reach the master: keep it secret, like a password.

--rotate replaces the token first, so that the old one no longer works (for instance when it
may have leaked, or once the new nodes have joined). --ttl D replaces it with one that
expires after D (e.g. 30m, 24h): after that the master refuses it, and join-cmd says to make
a new one. --ttl is refused while a member runs release 0.1.0, which as master would not
look at the expiry: finish the upgrade first. pmgcm delete also replaces the token
(keeping its expiry), since the deleted node knew it. With -o json, print the master, the
fingerprint, the token, its expiry and the whole command as JSON.`,
		Example: `  pmgcm join-cmd
  pmgcm join-cmd --ttl 1h`,
		Args: posArgs(),
		RunE: a.runE(func(ctx context.Context, c API, _ []string) error {
			if ttl < 0 {
				return usageErrorf("--ttl %s is negative", ttl)
			}
			return runJoinCmd(ctx, c, rotate, ttl, output, a.stdout, a.stderr)
		}),
	}
	cmd.Flags().BoolVar(&rotate, "rotate", false, "replace the join token first; the old token stops working")
	cmd.Flags().DurationVar(&ttl, "ttl", 0, "replace the join token with one that expires after `D` (implies --rotate)")
	addOutputFlag(cmd, &output)
	return cmd
}

// runJoinCmd prints the join command, or the api.JoinCmd as JSON; with rotate or ttl it
// first replaces the token and says so on stderr, with the expiry if there is one.
func runJoinCmd(ctx context.Context, c API, rotate bool, ttl time.Duration, output outputFormat, stdout, stderr io.Writer) error {
	var jc *api.JoinCmd
	var err error
	if ttl > 0 {
		jc, err = c.RotateJoinToken(ctx, ttl)
	} else {
		jc, err = c.JoinCmd(ctx, rotate)
	}
	if err != nil {
		return err
	}
	if rotate || ttl > 0 {
		fmt.Fprintln(stderr, "join token rotated; the old token no longer works")
	}
	if jc.Expires != nil {
		fmt.Fprintf(stderr, "the join token expires at %s\n", jc.Expires.UTC().Format(time.RFC3339))
	}
	if output == outputJSON {
		return writeJSON(stdout, jc)
	}
	// Built here rather than taken from jc.Command: a daemon of the first release sends
	// the form with --token on the command line.
	_, err = fmt.Fprintln(stdout, api.JoinCommandLine(jc.Master, jc.Fingerprint, jc.Token))
	return err
}
