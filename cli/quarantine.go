package cli

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/spf13/cobra"

	"github.com/pmgcm/pmgcm/api"
)

// quarantineHints say what to do about the daemon's quarantine errors when it gave no hint.
var quarantineHints = map[string]string{
	api.CodeNotFound: "list the messages and their IDs with 'pmgcm quarantine list'",
}

// maxSubject is how many characters of a subject the list table shows.
const maxSubject = 40

func (a *app) quarantineCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "quarantine",
		Short: "List, show, delete and release quarantined mail",
		Long: `List, show, delete and release the messages of the mail quarantine.

Every message that a node accepts by SMTP is stored on that node before the sender gets
its answer, then copied to every other cluster node in the background, within about a
second on a healthy cluster: quarantine data is synchronized to all cluster nodes, so
each node can show every message, and a message stays available while any one node that
holds it is up. A node that was down, or has just joined, catches up on its own (status
shows it in state S meanwhile).

delete and release work on any node: the change is made on this node and replicated to
every other node in the same way. The commands take the message ID that list prints.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageErrorf("unknown quarantine command %q", args[0])
			}
			return cmd.Help()
		},
	}
	cmd.AddCommand(a.quarantineListCmd(), a.quarantineShowCmd(),
		a.quarantineChangeCmd("delete", "Delete a message from the quarantine on every node",
			`Delete the message ID from the quarantine. The deletion replicates to every cluster node:
the message is gone from all of them, whichever node you run it on.`,
			API.QuarantineDelete, "deleted"),
		a.quarantineChangeCmd("release", "Release a message from the quarantine",
			`Mark the message ID as released. The change replicates to every cluster node, whichever
node you run it on.`,
			API.QuarantineRelease, "released"))
	return cmd
}

// quarantineListOptions are the flags of `pmgcm quarantine list`.
type quarantineListOptions struct {
	from, to, state string
	output          outputFormat
}

func (a *app) quarantineListCmd() *cobra.Command {
	var opts quarantineListOptions
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the quarantined messages",
		Long: `List the messages of the quarantine, newest first: ID, time received (local time),
sender, recipients, size in bytes, state and subject. A bounce has the sender <>. Long
subjects are cut short; 'pmgcm quarantine show ID' prints the whole message.

--from and --to keep the messages whose sender, or one of whose recipients, contains the
given text; --state keeps those in one state: quarantined, released or deleted.

With -o json, print the messages as an array of {"id", "origin_cid", "from", "to",
"subject", "size", "sha256", "state", "received"}; origin_cid is the node that accepted
the message.`,
		Example: `  pmgcm quarantine list
  pmgcm quarantine list --to @example.com --state quarantined
  pmgcm quarantine list -o json`,
		Args: func(cmd *cobra.Command, args []string) error {
			if err := posArgs()(cmd, args); err != nil {
				return err
			}
			switch opts.state {
			case "", api.MailQuarantined, api.MailReleased, api.MailDeleted:
				return nil
			}
			return usageErrorf("bad --state %q: want %s, %s or %s", opts.state,
				api.MailQuarantined, api.MailReleased, api.MailDeleted)
		},
		RunE: a.runE(func(ctx context.Context, c API, _ []string) error {
			return runQuarantineList(ctx, c, opts, a.loc, a.stdout)
		}),
	}
	f := cmd.Flags()
	f.StringVar(&opts.from, "from", "", "only messages whose sender contains `TEXT`")
	f.StringVar(&opts.to, "to", "", "only messages with a recipient that contains `TEXT`")
	f.StringVar(&opts.state, "state", "", "only messages in `STATE`: quarantined, released or deleted")
	addOutputFlag(cmd, &opts.output)
	return cmd
}

// runQuarantineList prints the messages as a table, times in loc (nil: local time), or
// as a JSON array.
func runQuarantineList(ctx context.Context, c API, opts quarantineListOptions, loc *time.Location, w io.Writer) error {
	// Printed as the messages arrive (issue 16).
	if opts.output == outputJSON {
		aw := newJSONArrayWriter(w)
		if err := c.QuarantineListEach(ctx, opts.from, opts.to, opts.state, func(m api.QuarantineMessage) error { return aw.add(m) }); err != nil {
			return err
		}
		return aw.close()
	}
	if loc == nil {
		loc = time.Local
	}
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tRECEIVED\tFROM\tTO\tSIZE\tSTATE\tSUBJECT")
	err := c.QuarantineListEach(ctx, opts.from, opts.to, opts.state, func(m api.QuarantineMessage) error {
		from := m.From
		if from == "" {
			from = "<>"
		}
		_, err := fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", cell(m.ID), m.Received.In(loc).Format(time.RFC3339),
			cell(from), cell(strings.Join(m.To, ",")), m.Size, cell(m.State), cut(cell(m.Subject), maxSubject))
		return err
	})
	if err != nil {
		return err
	}
	return tw.Flush()
}

// cell makes s safe for one table cell: control characters (tabs and newlines would
// break the row) become spaces, and runs of spaces one.
func cell(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == unicode.ReplacementChar {
			return ' '
		}
		return r
	}, s)
	return strings.Join(strings.Fields(s), " ")
}

// cut shortens s to at most n characters, the last one "…" when it was cut.
func cut(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return strings.TrimRight(string(r[:n-1]), " ") + "…"
}

func (a *app) quarantineShowCmd() *cobra.Command {
	var output outputFormat
	cmd := &cobra.Command{
		Use:   "show ID",
		Short: "Print a quarantined message, headers and body",
		Long: `Print the message ID as it was received, headers and body, byte-exact with nothing
added, so that 'pmgcm quarantine show ID > FILE' saves it. It is checked against its
SHA-256 on the way. With -o json, print {"id", "sha256", "size", "message"} (or
"message_base64" when the message is not valid UTF-8).`,
		Example: `  pmgcm quarantine show 01J9Z8K6T3M5 | less
  pmgcm quarantine show 01J9Z8K6T3M5 > message.eml`,
		Args: idArgs,
		RunE: a.runE(func(ctx context.Context, c API, args []string) error {
			return runQuarantineShow(ctx, c, args[0], output, a.stdout)
		}),
	}
	addOutputFlag(cmd, &output)
	return cmd
}

// shownMessage is the JSON form of `pmgcm quarantine show -o json`.
type shownMessage struct {
	ID            string  `json:"id"`
	SHA256        string  `json:"sha256,omitempty"`
	Size          int     `json:"size"`
	Message       *string `json:"message,omitempty"`
	MessageBase64 string  `json:"message_base64,omitempty"`
}

// runQuarantineShow prints the raw message, or its JSON form.
func runQuarantineShow(ctx context.Context, c API, id string, output outputFormat, w io.Writer) error {
	msg, sum, err := c.QuarantineShow(ctx, id)
	if err != nil {
		return withHint(err, quarantineHints)
	}
	if output == outputJSON {
		e := configEntry(id, 0, msg) // the same text-or-base64 choice as config values
		return writeJSON(w, shownMessage{ID: id, SHA256: sum, Size: len(msg), Message: e.Value,
			MessageBase64: e.ValueBase64})
	}
	_, err = w.Write(msg)
	return err
}

// quarantineChangeCmd builds `pmgcm quarantine delete` or `release`: call changes the
// message, and done ends the line "<id> <done>".
func (a *app) quarantineChangeCmd(name, short, long string,
	call func(API, context.Context, string) (*api.QuarantineMessage, error), done string) *cobra.Command {
	var output outputFormat
	cmd := &cobra.Command{
		Use:     name + " ID",
		Short:   short,
		Long:    long + "\n\nWith -o json, print the message in its new state, as list -o json does.",
		Example: "  pmgcm quarantine " + name + " 01J9Z8K6T3M5",
		Args:    idArgs,
		RunE: a.runE(func(ctx context.Context, c API, args []string) error {
			m, err := call(c, ctx, args[0])
			if err != nil {
				return withHint(err, quarantineHints)
			}
			if output == outputJSON {
				return writeJSON(a.stdout, m)
			}
			id := args[0]
			if m != nil && m.ID != "" {
				id = m.ID
			}
			_, err = fmt.Fprintf(a.stdout, "%s %s\n", id, done)
			return err
		}),
	}
	addOutputFlag(cmd, &output)
	return cmd
}

// idArgs takes exactly one message ID, not empty and of printable characters.
func idArgs(cmd *cobra.Command, args []string) error {
	if err := posArgs("ID")(cmd, args); err != nil {
		return err
	}
	if args[0] == "" || cell(args[0]) != args[0] || strings.Contains(args[0], " ") {
		return usageErrorf("bad message ID %s: list the IDs with 'pmgcm quarantine list'", strconv.Quote(args[0]))
	}
	return nil
}
