package cli

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/pmgcm/pmgcm/api"
)

// deleteHints say what to do about the daemon's delete errors when it gave no hint itself.
var deleteHints = map[string]string{
	api.CodeNotFound: "list the nodes and their CIDs with pmgcm status",
	api.CodeNoQuorum: "if the node is dead for good and its loss took the quorum (a 2-node " +
		"cluster), remove it with 'pmgcm delete --force' (read 'pmgcm delete --help' first)",
	api.CodeFenced: "this node was superseded by a forced promotion: run " +
		"'pmgcm sync --master_ip <the new master's IP>' to bring it back",
}

// forceDelete is the warning and question of `pmgcm delete --force`.
func forceDelete(cid uint64) forcedAction {
	return forcedAction{
		headline: "a forced delete is only for a node lost for good, with the quorum it took " +
			"with it.",
		prompt:    fmt.Sprintf("Force the removal of cid %d? [y/N]: ", cid),
		cancelled: "delete cancelled: nothing was changed",
	}
}

// deleteOptions are the flags of `pmgcm delete`.
type deleteOptions struct {
	force  bool
	yes    bool
	output outputFormat
}

func (a *app) deleteCmd() *cobra.Command {
	var opts deleteOptions
	cmd := &cobra.Command{
		Use:   "delete CID",
		Short: "Remove a node from the cluster",
		Long: `Remove the node with the unique cluster node ID CID, as listed with pmgcm status, from
the cluster: from its membership and from the Raft configuration. The other nodes refuse
its certificate at once.

Please detach the node from the cluster network (or shut it down) before removing it from
the cluster configuration. To bring it back later, join it again with pmgcm join, which
destroys its data. This is the manual's recovery from a single node failure: delete the
failed node on the master, then join the new node.

--force is for a 2-node cluster whose other node is dead: the survivor alone cannot reach
a quorum, so it can neither remove the dead node nor change any configuration. With
--force, the removal works like 'pmgcm promote --force': this node becomes the only voter
and starts a new cluster epoch, and every other member is fenced until
'pmgcm sync --master_ip <this node's IP>' is run on it. Never force while the other node
may be alive but cut off from this one only: that makes a second master (split brain).
Check first that it is powered off or unreachable from every node, not only from this
one. pmgcm prints this warning before it acts; on a terminal it then asks for
confirmation unless --yes is given. Off a terminal, --force itself is the consent.

The join token is replaced after the removal (its expiry kept): the deleted node knew it.
pmgcm says so; print the new token with pmgcm join-cmd.

With -o json, print the removed node's cid, name and ip, and whether the token was
rotated (token_rotated), as JSON.`,
		Example: `  pmgcm delete 3
  pmgcm delete --force 2`,
		Args: func(cmd *cobra.Command, args []string) error {
			if err := posArgs("CID")(cmd, args); err != nil {
				return err
			}
			_, err := parseCID(args[0])
			return err
		},
		RunE: a.runLongE(func(ctx context.Context, c API, args []string) error {
			cid, _ := parseCID(args[0])
			if opts.force {
				if err := a.confirmForce(ctx, forceDelete(cid), opts.yes); err != nil {
					return err
				}
			}
			cctx, cancel := a.callCtx(ctx)
			err := runDelete(cctx, c, cid, opts.force, opts.output, a.stdout)
			cancel()
			if err != nil || !opts.force {
				return err
			}
			return a.tellFenced(ctx, c, cid, opts.output)
		}),
	}
	f := cmd.Flags()
	f.BoolVar(&opts.force, "force", false, "remove a dead node from a 2-node cluster that lost its quorum with it")
	f.BoolVarP(&opts.yes, "yes", "y", false, "with --force: do not ask for confirmation on a terminal")
	addOutputFlag(cmd, &opts.output)
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

// runDelete removes the node (with force, the way of a forced promotion) and prints
// "deleted cid <N> (<name>, <ip>)", or the api.DeleteResponse as JSON.
func runDelete(ctx context.Context, c API, cid uint64, force bool, output outputFormat, w io.Writer) error {
	r, err := c.Delete(ctx, cid, force)
	if err != nil {
		return withHint(err, deleteHints)
	}
	if output == outputJSON {
		return writeJSON(w, r)
	}
	if _, err = fmt.Fprintf(w, "deleted cid %d (%s, %s)\n", r.CID, orDash(r.Name), orDash(r.IP)); err != nil {
		return err
	}
	if r.TokenRotated {
		_, err = fmt.Fprintln(w, "join token rotated: the deleted node knew it; print the new one with pmgcm join-cmd")
	} else {
		_, err = fmt.Fprintln(w, "warning: the join token was not rotated and the deleted node knows it: run pmgcm join-cmd --rotate")
	}
	return err
}

// tellFenced says, after a forced delete of cid, which members are left fenced and how to
// bring them back; nothing when this node is the only member left. With -o json it says so
// on stderr, to keep stdout JSON.
func (a *app) tellFenced(ctx context.Context, c API, cid uint64, output outputFormat) error {
	ip, st := a.localIP(ctx, c)
	var line string
	if st == nil {
		line = fmt.Sprintf("any other member is fenced: run 'pmgcm sync --master_ip %s' on it "+
			"to bring it back", ip)
	} else {
		var others []uint64
		for _, n := range st.Nodes {
			if !n.Local && n.CID != cid {
				others = append(others, n.CID)
			}
		}
		if len(others) == 0 {
			return nil
		}
		slices.Sort(others)
		line = fencedLine(others, ip)
	}
	w := a.stdout
	if output == outputJSON {
		w = a.stderr
	}
	_, err := fmt.Fprintln(w, line)
	return err
}
