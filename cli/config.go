package cli

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"strconv"
	"text/tabwriter"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/pmgcm/pmgcm/api"
)

func (a *app) configCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Read and write the replicated configuration",
		Long: `Read and write the replicated configuration: key/value entries stored in the cluster
log and applied on every node. Writes on any node are forwarded to the master.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageErrorf("unknown config command %q", args[0])
			}
			return cmd.Help()
		},
	}
	cmd.AddCommand(a.configGetCmd(), a.configSetCmd(), a.configListCmd(), a.configDeleteCmd())
	return cmd
}

func (a *app) configGetCmd() *cobra.Command {
	var output outputFormat
	cmd := &cobra.Command{
		Use:   "get KEY",
		Short: "Print the value of a key, byte-exact",
		Long: `Print the value of KEY byte-exact, with nothing added (no trailing newline).
With -o json, print {"key", "version", "size", "value"} (or "value_base64" when the value
is not valid UTF-8).`,
		Args: keyArgs("KEY"),
		RunE: a.runE(func(ctx context.Context, c API, args []string) error {
			return runConfigGet(ctx, c, args[0], output, a.stdout)
		}),
	}
	addOutputFlag(cmd, &output)
	return cmd
}

// runConfigGet prints the value of key, raw or as JSON.
func runConfigGet(ctx context.Context, c API, key string, output outputFormat, w io.Writer) error {
	value, version, err := c.ConfigGet(ctx, key)
	if err != nil {
		return err
	}
	if output == outputJSON {
		return writeJSON(w, configEntry(key, version, value))
	}
	_, err = w.Write(value)
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
}

func (a *app) configSetCmd() *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "set KEY {VALUE | --file PATH}",
		Short: "Set the value of a key",
		Long: `Set the value of KEY, given on the command line or read from a file with --file
(--file - reads stdin). The write is acknowledged once it is committed by a majority of the
cluster's voters; the command prints the new version.`,
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
			opts := configSetOptions{key: args[0], file: file}
			if len(args) == 2 {
				opts.value, opts.hasValue = []byte(args[1]), true
			}
			return runConfigSet(ctx, c, opts, a.stdin, a.stdout)
		}),
	}
	cmd.Flags().StringVar(&file, "file", "", "read the value from `PATH` (- for stdin)")
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
	r, err := c.ConfigSet(ctx, opts.key, value)
	if err != nil {
		return err
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
	cmd := &cobra.Command{
		Use:   "list [PREFIX]",
		Short: "List the keys, optionally those starting with PREFIX",
		Long: `List the configuration keys with their version and size in bytes, optionally only
those starting with PREFIX. With -o json, print the entries as an array.`,
		Args: posArgs("[PREFIX]"),
		RunE: a.runE(func(ctx context.Context, c API, args []string) error {
			prefix := ""
			if len(args) == 1 {
				prefix = args[0]
			}
			return runConfigList(ctx, c, prefix, output, a.stdout)
		}),
	}
	addOutputFlag(cmd, &output)
	return cmd
}

// runConfigList prints the entries under prefix as an aligned table, or as a JSON array.
func runConfigList(ctx context.Context, c API, prefix string, output outputFormat, w io.Writer) error {
	l, err := c.ConfigList(ctx, prefix)
	if err != nil {
		return err
	}
	entries := l.Entries
	if entries == nil {
		entries = []api.ConfigEntry{}
	}
	if output == outputJSON {
		return writeJSON(w, entries)
	}
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tVERSION\tSIZE")
	for _, e := range entries {
		fmt.Fprintf(tw, "%s\t%d\t%d\n", printableKey(e.Key), e.Version, e.Size)
	}
	return tw.Flush()
}

func (a *app) configDeleteCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "delete KEY",
		Short: "Delete a key",
		Args:  keyArgs("KEY"),
		RunE: a.runE(func(ctx context.Context, c API, args []string) error {
			return runConfigDelete(ctx, c, args[0], a.stdout)
		}),
	}
}

// runConfigDelete deletes key and prints "<key> deleted (version N)".
func runConfigDelete(ctx context.Context, c API, key string, w io.Writer) error {
	r, err := c.ConfigDelete(ctx, key)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s deleted (version %d)\n", keyOr(r.Key, key), r.Version)
	return err
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
