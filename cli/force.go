package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/pmgcm/pmgcm/api"
)

// placeholderIP stands for this node's IP address in advice when the CLI could not learn it.
const placeholderIP = "<this node's ip>"

// splitBrainWarning follows the first line of every forced-recovery warning: what a forced
// recovery does to the other members, the split brain it makes when they are alive, and how
// to check that they are not.
const splitBrainWarning = `This node becomes the only voter of the cluster and starts a new cluster epoch.
If the other voters are alive but cut off from this node (a network split), forcing
creates a second master: a split brain, with two configurations that drift apart.
Check first: run 'pmgcm status' on the other nodes, or check that they are powered off
or unreachable from every node, not only from this one.
Every other member will be fenced (it can neither vote nor accept a write) until
'pmgcm sync --master_ip <this node's IP>' is run on it.
`

// forcedAction describes a forced recovery (`promote --force`, `delete --force`) for
// confirmForce.
type forcedAction struct {
	// headline is the first line of the warning: what the force is for.
	headline string
	// prompt is the question asked on a terminal.
	prompt string
	// cancelled is the error when the operator declines.
	cancelled string
}

// confirmForce prints the split-brain warning of a forced recovery on stderr and, on a
// terminal and without --yes, asks the operator to confirm. Off a terminal the force flag
// itself is the consent. It must run before anything is sent to the daemon.
func (a *app) confirmForce(ctx context.Context, fa forcedAction, yes bool) error {
	if _, err := fmt.Fprintf(a.stderr, "WARNING: %s\n%s", fa.headline, splitBrainWarning); err != nil {
		return err
	}
	if yes || a.term == nil {
		return nil
	}
	ok, err := askYes(ctx, a.term, fa.prompt)
	if err != nil {
		return err
	}
	if !ok {
		return errors.New(fa.cancelled)
	}
	return nil
}

// localIP returns the IP address of the node that answers status, with the status, or
// placeholderIP (and a nil status) when the status fails or has no local row with an address.
func (a *app) localIP(ctx context.Context, c API) (string, *api.Status) {
	cctx, cancel := a.callCtx(ctx)
	st, err := c.Status(cctx)
	cancel()
	if err != nil || st == nil {
		return placeholderIP, nil
	}
	if n := localRow(st); n != nil && strings.TrimSpace(n.IP) != "" {
		return n.IP, st
	}
	return placeholderIP, st
}

// fencedLine tells which members a forced recovery fenced and how to bring them back.
func fencedLine(cids []uint64, ip string) string {
	names := make([]string, len(cids))
	for i, cid := range cids {
		names[i] = fmt.Sprintf("cid %d", cid)
	}
	return fmt.Sprintf("fenced: %s: run 'pmgcm sync --master_ip %s' on each to bring it back",
		strings.Join(names, ", "), ip)
}
