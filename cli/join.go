package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/api/client"
)

// Prompts and refusals of `pmgcm join`.
const (
	promptTrust = "Trust it? Compare it with the output of 'pmgcm join-cmd' on a member [y/N]: "
	promptToken = "Join token: "
	promptWipe  = "Joining destroys all configuration and data on this node and replaces it " +
		"with the cluster's. Continue? [y/N]: "

	msgUnconfirmedFP = "the master's fingerprint is not confirmed: check it with 'pmgcm join-cmd' " +
		"on a member and pass --fingerprint <FP>"
	msgNoToken = "no join token: pass --token, set PMGCM_JOIN_TOKEN, or run on a terminal to be " +
		"asked (get it with 'pmgcm join-cmd' on a member)"
	msgNoYes = "joining destroys all data on this node: pass --yes to confirm"

	// envJoinToken names the environment variable that holds the join token.
	envJoinToken = "PMGCM_JOIN_TOKEN"
)

// DefaultJoinWait is how long `pmgcm join` follows the catch-up unless --wait says otherwise.
const DefaultJoinWait = 10 * time.Minute

// joinOptions are the arguments of `pmgcm join`.
type joinOptions struct {
	master      string
	fingerprint string
	token       string
	yes         bool
	wait        time.Duration
}

// joinHints say what to do about the daemon's join errors when it gave no hint itself.
var joinHints = map[string]string{
	api.CodeBadToken:     "get the current token with 'pmgcm join-cmd' on a member",
	api.CodeTokenExpired: "make a new token with 'pmgcm join-cmd --rotate' (or --ttl D) on a member",
	api.CodeThrottled: "too many wrong tokens came from this node's address: check the token with " +
		"'pmgcm join-cmd' on a member, wait, and try again",
	api.CodeFingerprint: "the master presents another certificate than the fingerprint given: compare " +
		"with 'pmgcm join-cmd' on a member, and do not join if they differ",
	api.CodeUnreachable: "check the master's address and port, and that pmgclusterd runs there " +
		"and is reachable from this node",
	api.CodeClusterExists: "this node is already in a cluster: see pmgcm status",
	api.CodeIncompatible:  "run the same version of pmgcm on this node and on the master",
}

func (a *app) joinCmd() *cobra.Command {
	var opts joinOptions
	cmd := &cobra.Command{
		Use:   "join MASTER_IP[:PORT]",
		Short: "Join this node to a cluster (destroys all data on this node)",
		Long: `Join this node to the cluster of the master at MASTER_IP. Without :PORT, this node's
own cluster port is used.

When you add a new node to a cluster (join) all data on that node is destroyed: its whole
configuration and data are replaced with the cluster's. So do not join nodes which are
already active and receive mails.

Run 'pmgcm join-cmd' on a member of the cluster first: it prints the complete command, with
the fingerprint of the master's certificate and the join token. Without --fingerprint,
pmgcm asks the master for its fingerprint and shows it; confirm it on the terminal only if
it is the one 'pmgcm join-cmd' printed. The token comes from --token, else from
PMGCM_JOIN_TOKEN, else from a prompt on the terminal (not echoed); other users of this host
can see --token in the process list. Without --yes, pmgcm asks before it destroys the data.
Off a terminal nothing is asked: pass --fingerprint, a token and --yes.

Joining can take several minutes, because the new node needs to synchronize all data from
the master. pmgcm follows the catch-up until the node is a full member (state A), for at
most --wait (0: return as soon as the master has admitted the node). If you stop waiting
(Ctrl-C) after that, the node goes on catching up in the background: see pmgcm status.
--timeout bounds each request to the daemon, not the whole join.`,
		Example: `  pmgcm join 192.168.2.127 --fingerprint SHA256:... --token ...
  PMGCM_JOIN_TOKEN=... pmgcm join 192.168.2.127:8006 --yes`,
		Args: func(cmd *cobra.Command, args []string) error {
			if err := posArgs("MASTER_IP[:PORT]")(cmd, args); err != nil {
				return err
			}
			if err := checkMasterAddress(args[0]); err != nil {
				return err
			}
			for _, name := range []string{"fingerprint", "token"} {
				if f := cmd.Flags().Lookup(name); f.Changed && strings.TrimSpace(f.Value.String()) == "" {
					return usageErrorf("--%s must not be empty", name)
				}
			}
			if opts.wait < 0 {
				return usageErrorf("--wait must not be negative")
			}
			return nil
		},
		RunE: a.runLongE(func(ctx context.Context, c API, args []string) error {
			opts.master = args[0]
			return a.runJoin(ctx, c, opts)
		}),
	}
	f := cmd.Flags()
	f.StringVar(&opts.fingerprint, "fingerprint", "", "the master's certificate fingerprint `FP`, as printed by 'pmgcm join-cmd'")
	f.StringVar(&opts.token, "token", "", "the join `TOKEN` (env "+envJoinToken+"; asked on a terminal)")
	f.BoolVarP(&opts.yes, "yes", "y", false, "confirm that all data on this node is destroyed")
	f.DurationVar(&opts.wait, "wait", DefaultJoinWait, "follow the catch-up for at most `DURATION` (0: do not follow)")
	return cmd
}

// checkMasterAddress accepts "ip" and "ip:port" ("[v6]:port") with a literal IP address.
func checkMasterAddress(s string) error {
	if net.ParseIP(s) != nil {
		return nil
	}
	bad := usageErrorf("bad master address %q: want an IP address, optionally with :PORT "+
		"(192.168.2.127, 192.168.2.127:8006, [fd00::1]:8006)", s)
	host, port, err := net.SplitHostPort(s)
	if err != nil || net.ParseIP(host) == nil {
		return bad
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return usageErrorf("bad port in master address %q: want 1 to 65535", s)
	}
	return nil
}

// runJoin checks the master's fingerprint, gets the token and the operator's consent, asks
// the daemon to join and follows the catch-up.
func (a *app) runJoin(ctx context.Context, c API, opts joinOptions) error {
	fp := opts.fingerprint
	if fp == "" {
		var err error
		if fp, err = a.confirmFingerprint(ctx, c, opts.master); err != nil {
			return err
		}
	}
	token, err := a.joinToken(ctx, opts.token)
	if err != nil {
		return err
	}
	if !opts.yes {
		if a.term == nil {
			return errors.New(msgNoYes)
		}
		ok, err := askYes(ctx, a.term, promptWipe)
		if err != nil {
			return err
		}
		if !ok {
			return errors.New("join cancelled: nothing was changed")
		}
	}

	cctx, cancel := a.callCtx(ctx)
	jr, err := c.Join(cctx, api.JoinRequest{Master: opts.master, Fingerprint: fp, Token: token})
	cancel()
	if err != nil {
		return withHint(err, joinHints)
	}
	if _, err := fmt.Fprintf(a.stdout, "joined cluster %s as cid %d (master %s); catching up\n",
		jr.ClusterID, jr.CID, jr.MasterAddress); err != nil {
		return err
	}
	if opts.wait == 0 {
		return nil
	}
	return a.followCatchUp(ctx, c, catchUp{
		row:        func(st *api.Status) *api.Node { return joinedRow(st, jr) },
		done:       "node %s(%d) is a full member: state %s\n",
		background: "joining",
		stuck: func(st *api.Status, n *api.Node) string {
			return joinStuck(st, n, jr, opts.wait)
		},
	}, opts.wait)
}

// confirmFingerprint shows what the master presents and returns its fingerprint once the
// operator has confirmed it on the terminal.
func (a *app) confirmFingerprint(ctx context.Context, c API, master string) (string, error) {
	cctx, cancel := a.callCtx(ctx)
	p, err := c.JoinProbe(cctx, master)
	cancel()
	if err != nil {
		return "", withHint(err, joinHints)
	}
	if p.Fingerprint == "" {
		return "", fmt.Errorf("the master at %s presents no fingerprint", orDash(p.Address))
	}
	if _, err := fmt.Fprintf(a.stdout, "the master at %s (cluster %s, node %s) presents fingerprint %s\n",
		p.Address, p.ClusterID, p.Name, p.Fingerprint); err != nil {
		return "", err
	}
	if a.term == nil {
		return "", errors.New(msgUnconfirmedFP)
	}
	ok, err := askYes(ctx, a.term, promptTrust)
	if err != nil {
		return "", err
	}
	if !ok {
		return "", errors.New("join cancelled: the master's fingerprint was not confirmed; nothing was changed")
	}
	return p.Fingerprint, nil
}

// joinToken returns the token of --token, else of PMGCM_JOIN_TOKEN, else asked on the
// terminal without echo.
func (a *app) joinToken(ctx context.Context, flag string) (string, error) {
	if flag != "" {
		return flag, nil
	}
	if t := strings.TrimSpace(a.getenv(envJoinToken)); t != "" {
		return t, nil
	}
	if a.term == nil {
		return "", errors.New(msgNoToken)
	}
	line, err := a.term.readSecret(ctx, promptToken)
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	if t := strings.TrimSpace(line); t != "" {
		return t, nil
	}
	return "", errors.New("no join token given (get it with 'pmgcm join-cmd' on a member)")
}

// joinedRow returns the row of the node that answered once it shows the node in the cluster
// it joined, with the CID it was given; nil before (a status from before the join, or from
// a daemon still resetting its state).
func joinedRow(st *api.Status, jr *api.JoinResponse) *api.Node {
	if jr.ClusterID != "" && (st.Cluster == nil || st.Cluster.ID != jr.ClusterID) {
		return nil
	}
	for i := range st.Nodes {
		if n := &st.Nodes[i]; n.Local && (jr.CID == 0 || n.CID == jr.CID) {
			return n
		}
	}
	return nil
}

// withHint returns err with hints[code] as its hint when err is an *client.APIError that has none.
func withHint(err error, hints map[string]string) error {
	var ae *client.APIError
	if !errors.As(err, &ae) || ae.Hint != "" {
		return err
	}
	h, ok := hints[ae.Code]
	if !ok {
		return err
	}
	c := *ae
	c.Hint = h
	return &c
}
