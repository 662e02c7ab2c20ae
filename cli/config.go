package cli

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/api/client"
)

func (a *app) configCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Read and write the replicated configuration",
		Long: `Read and write the replicated configuration: key/value entries stored in the cluster
log and applied on every node. Writes on any node are forwarded to the master.

Reads (get, list) are linearizable by default: the master confirms with a majority of
the voters that it is still the master, and the answer includes every write acknowledged
before the read began, on whichever node it runs. --stale reads this node's own copy
instead: it works without quorum, but may miss recent writes.

Writes (set, delete) take --if-version N for safe concurrent edits (compare-and-set):
the write applies only if the key is still at version N (0: only if it is absent).
watch follows the changes as they happen.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageErrorf("unknown config command %q", args[0])
			}
			return cmd.Help()
		},
	}
	cmd.AddCommand(a.configGetCmd(), a.configSetCmd(), a.configListCmd(), a.configDeleteCmd(),
		a.configWatchCmd())
	return cmd
}

// staleHelp says what --stale means, for the help of the commands that read.
const staleHelp = `The read is linearizable by default: it is confirmed by the master and a majority of
the voters, so it sees every write acknowledged before it began, on any node. It fails
without quorum. --stale reads this node's own copy instead: it works without quorum (a
node cut off from the master, a cluster that lost its master), but may miss recent
writes. pmgcm then prints on stderr how far behind the node may be: its applied index
and the time since it last heard from the master.`

// staleFlagUsage is the usage line of --stale.
const staleFlagUsage = "read this node's own copy: works without quorum, but may miss recent writes"

func (a *app) configGetCmd() *cobra.Command {
	var output outputFormat
	var ro client.ReadOptions
	cmd := &cobra.Command{
		Use:   "get KEY",
		Short: "Print the value of a key, byte-exact",
		Long: `Print the value of KEY byte-exact, with nothing added (no trailing newline), so that
'pmgcm config get KEY > FILE' restores a file set with --file. With -o json, print
{"key", "version", "size", "value"} (or "value_base64" when the value is not valid
UTF-8); the version is what --if-version of set and delete takes.

` + staleHelp,
		Example: `  pmgcm config get mail/relay
  pmgcm config get mail/relay --stale`,
		Args: keyArgs("KEY"),
		RunE: a.runE(func(ctx context.Context, c API, args []string) error {
			return runConfigGet(ctx, c, args[0], ro, output, a.stdout, a.stderr)
		}),
	}
	cmd.Flags().BoolVar(&ro.Stale, "stale", false, staleFlagUsage)
	addOutputFlag(cmd, &output)
	return cmd
}

// runConfigGet prints the value of key, raw or as JSON, on w, and the stale-read note
// on ew.
func runConfigGet(ctx context.Context, c API, key string, ro client.ReadOptions, output outputFormat, w, ew io.Writer) error {
	v, err := c.ConfigGet(ctx, key, ro)
	if err != nil {
		return err
	}
	// The note comes first: the raw value has no trailing newline to end a line with.
	if err := staleNote(ew, v.Read); err != nil {
		return err
	}
	if output == outputJSON {
		return writeJSON(w, configEntry(key, v.Version, v.Value))
	}
	_, err = w.Write(v.Value)
	return err
}

// staleNote says on w how far behind a stale read may be; nothing for a linearizable one.
func staleNote(w io.Writer, ri client.ReadInfo) error {
	if !ri.Stale {
		return nil
	}
	_, err := fmt.Fprintf(w, "stale read from this node: applied index %d, last contact with the master %s\n",
		ri.AppliedIndex, ri.LastContact)
	return err
}

// configEntry builds the JSON form of a value: text in Value when it is valid UTF-8,
// otherwise base64 in ValueBase64, as in api.ConfigEntry.
func configEntry(key string, version uint64, value []byte) api.ConfigEntry {
	e := api.ConfigEntry{Key: key, Version: version, Size: len(value)}
	if utf8.Valid(value) {
		s := string(value)
		e.Value = &s
	} else {
		e.ValueBase64 = base64.StdEncoding.EncodeToString(value)
	}
	return e
}

// configSetOptions are the arguments of `pmgcm config set`: the value comes either from
// the command line or from a file ("-" is stdin).
type configSetOptions struct {
	key      string
	value    []byte
	hasValue bool
	file     string
	write    client.WriteOptions
}

// casHelp says what --if-version does, for the help of the commands that write.
const casHelp = `--if-version N makes the write safe against concurrent edits (compare-and-set): it
applies only if KEY is still at version N, the version that 'pmgcm config get KEY -o json'
or 'pmgcm config list' showed when you read it; N = 0 means "only if KEY does not exist".
If someone changed KEY in between, nothing is changed: pmgcm names the current version
and exits 1, and you can read the value again and retry. Without --if-version the write
is unconditional.`

// ifVersionUsage is the usage line of --if-version.
const ifVersionUsage = "write only if KEY is still at version `N` (0: only if absent)"

func (a *app) configSetCmd() *cobra.Command {
	var file string
	var ifv versionFlag
	cmd := &cobra.Command{
		Use:   "set KEY {VALUE | --file PATH}",
		Short: "Set the value of a key",
		Long: `Set the value of KEY, given on the command line or read from a file with --file
(--file - reads stdin). The write is acknowledged once it is committed by a majority of the
cluster's voters; the command prints the new version.

` + casHelp,
		Example: `  pmgcm config set mail/relay smtp.example.com
  pmgcm config set spam/rules.cf --file rules.cf --if-version 42
  pmgcm config set mail/relay smtp.example.com --if-version 0`,
		Args: func(cmd *cobra.Command, args []string) error {
			if err := keyArgs("KEY", "[VALUE]")(cmd, args); err != nil {
				return err
			}
			hasFile := cmd.Flags().Changed("file")
			switch {
			case len(args) == 2 && hasFile:
				return usageErrorf("give either VALUE or --file, not both")
			case len(args) == 1 && !hasFile:
				return usageErrorf("missing VALUE (or --file PATH)")
			case hasFile && file == "":
				return usageErrorf("--file needs a path (- for stdin)")
			}
			return nil
		},
		RunE: a.runE(func(ctx context.Context, c API, args []string) error {
			opts := configSetOptions{key: args[0], file: file, write: ifv.writeOptions()}
			if len(args) == 2 {
				opts.value, opts.hasValue = []byte(args[1]), true
			}
			return runConfigSet(ctx, c, opts, a.stdin, a.stdout)
		}),
	}
	cmd.Flags().StringVar(&file, "file", "", "read the value from `PATH` (- for stdin)")
	cmd.Flags().Var(&ifv, "if-version", ifVersionUsage)
	return cmd
}

// runConfigSet writes the value and prints "<key> version <N>".
func runConfigSet(ctx context.Context, c API, opts configSetOptions, stdin io.Reader, w io.Writer) error {
	value := opts.value
	if !opts.hasValue {
		var err error
		if value, err = readValue(opts.file, stdin); err != nil {
			return err
		}
	}
	r, err := c.ConfigSet(ctx, opts.key, value, opts.write)
	if err != nil {
		return conflictHint(err, opts.key, "set")
	}
	_, err = fmt.Fprintf(w, "%s version %d\n", keyOr(r.Key, opts.key), r.Version)
	return err
}

// readValue reads the whole value from path, or from stdin when path is "-".
func readValue(path string, stdin io.Reader) ([]byte, error) {
	if path == "-" {
		b, err := io.ReadAll(stdin)
		if err != nil {
			return nil, fmt.Errorf("reading value from stdin: %w", err)
		}
		return b, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading value: %w", err)
	}
	return b, nil
}

func (a *app) configListCmd() *cobra.Command {
	var output outputFormat
	var ro client.ReadOptions
	cmd := &cobra.Command{
		Use:   "list [PREFIX]",
		Short: "List the keys, optionally those starting with PREFIX",
		Long: `List the configuration keys with their version and size in bytes, optionally only
those starting with PREFIX. With -o json, print the entries, values included, as an array.

` + staleHelp,
		Args: posArgs("[PREFIX]"),
		RunE: a.runE(func(ctx context.Context, c API, args []string) error {
			prefix := ""
			if len(args) == 1 {
				prefix = args[0]
			}
			return runConfigList(ctx, c, prefix, ro, output, a.stdout, a.stderr)
		}),
	}
	cmd.Flags().BoolVar(&ro.Stale, "stale", false, staleFlagUsage)
	addOutputFlag(cmd, &output)
	return cmd
}

// runConfigList prints the entries under prefix as an aligned table, or as a JSON array,
// on w, and the stale-read note on ew.
func runConfigList(ctx context.Context, c API, prefix string, ro client.ReadOptions, output outputFormat, w, ew io.Writer) error {
	// Printed as the entries arrive (issue 16); the table's columns are aligned once all
	// rows are in, which holds the keys, not the values.
	var each func(api.ConfigEntry) error
	var done func() error
	if output == outputJSON {
		aw := newJSONArrayWriter(w)
		each = func(e api.ConfigEntry) error { return aw.add(e) }
		done = aw.close
	} else {
		tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "KEY\tVERSION\tSIZE")
		each = func(e api.ConfigEntry) error {
			_, err := fmt.Fprintf(tw, "%s\t%d\t%d\n", printableKey(e.Key), e.Version, e.Size)
			return err
		}
		done = tw.Flush
	}
	ri, err := c.ConfigListEach(ctx, prefix, ro, each)
	if err != nil {
		return err
	}
	if err := done(); err != nil {
		return err
	}
	return staleNote(ew, ri)
}

func (a *app) configDeleteCmd() *cobra.Command {
	var ifv versionFlag
	cmd := &cobra.Command{
		Use:   "delete KEY",
		Short: "Delete a key",
		Long: `Delete KEY. The deletion is acknowledged once it is committed by a majority of the
cluster's voters; the command prints its version.

` + casHelp,
		Example: `  pmgcm config delete mail/relay
  pmgcm config delete mail/relay --if-version 42`,
		Args: keyArgs("KEY"),
		RunE: a.runE(func(ctx context.Context, c API, args []string) error {
			return runConfigDelete(ctx, c, args[0], ifv.writeOptions(), a.stdout)
		}),
	}
	cmd.Flags().Var(&ifv, "if-version", ifVersionUsage)
	return cmd
}

// runConfigDelete deletes key and prints "<key> deleted (version N)".
func runConfigDelete(ctx context.Context, c API, key string, wo client.WriteOptions, w io.Writer) error {
	r, err := c.ConfigDelete(ctx, key, wo)
	if err != nil {
		return conflictHint(err, key, "delete")
	}
	_, err = fmt.Fprintf(w, "%s deleted (version %d)\n", keyOr(r.Key, key), r.Version)
	return err
}

// versionFlag is a flag that takes a version: a non-negative integer.
type versionFlag struct {
	v   uint64
	set bool
}

func (f *versionFlag) String() string {
	if !f.set {
		return ""
	}
	return strconv.FormatUint(f.v, 10)
}

func (f *versionFlag) Set(s string) error {
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return errors.New("must be a version: a non-negative integer")
	}
	f.v, f.set = v, true
	return nil
}

func (f *versionFlag) Type() string { return "N" }

// writeOptions makes the write conditional when the flag was given.
func (f *versionFlag) writeOptions() client.WriteOptions {
	if !f.set {
		return client.WriteOptions{}
	}
	v := f.v
	return client.WriteOptions{IfVersion: &v}
}

// conflictHint adds to a compare-and-set conflict, when the daemon gave no hint, what the
// operator can do; verb is "set" or "delete".
func conflictHint(err error, key, verb string) error {
	var ae *client.APIError
	if !errors.As(err, &ae) || ae.Code != api.CodeConflict || ae.Hint != "" {
		return err
	}
	c := *ae
	switch {
	case ae.Version > 0:
		c.Hint = fmt.Sprintf("nothing was changed; to %s it anyway, check the current value with "+
			"'pmgcm config get %s', then retry with --if-version %d", verb, shellArg(key), ae.Version)
	case verb == "set":
		c.Hint = "nothing was changed; the key does not exist now: retry with --if-version 0 " +
			"to create it only while it is absent"
	default:
		c.Hint = "nothing was changed; the key does not exist now"
	}
	return &c
}

// shellArg quotes s for a shell when it holds anything but safe characters.
func shellArg(s string) string {
	safe := s != ""
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-+:@%=,", r)) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// keyArgs is posArgs that also refuses an empty key in the first position.
func keyArgs(names ...string) cobra.PositionalArgs {
	check := posArgs(names...)
	return func(cmd *cobra.Command, args []string) error {
		if err := check(cmd, args); err != nil {
			return err
		}
		if args[0] == "" {
			return usageErrorf("KEY must not be empty")
		}
		return nil
	}
}

func keyOr(key, fallback string) string {
	if key == "" {
		return fallback
	}
	return key
}

// printableKey quotes a key that holds tabs, newlines or other non-printable characters,
// so that one entry stays one row.
func printableKey(k string) string {
	if q := strconv.Quote(k); q[1:len(q)-1] != k {
		return q
	}
	return k
}
