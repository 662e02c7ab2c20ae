package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/pmgcm/pmgcm/api/client"
)

// Exit codes of Main and Run.
const (
	// ExitOK means the command did what was asked.
	ExitOK = 0
	// ExitError means the command failed at run time (daemon unreachable, API error, I/O).
	ExitError = 1
	// ExitUsage means bad arguments or flags; nothing was sent to the daemon.
	ExitUsage = 2
)

// DefaultTimeout bounds each command's conversation with the daemon unless --timeout says
// otherwise.
const DefaultTimeout = 30 * time.Second

// Main runs pmgcm with args (without the program name), reading stdin from os.Stdin, and
// returns the exit code. It uses a background context; see Run for a cancellable one.
func Main(args []string, stdout, stderr io.Writer) int {
	return Run(context.Background(), args, os.Stdin, stdout, stderr)
}

// Run is Main with an explicit root context (cmd/pmgcm cancels it on SIGINT/SIGTERM) and
// stdin (nil reads as empty). It talks to the daemon through a Client on the socket chosen by --socket,
// PMGCM_SOCKET or DefaultSocketPath, and returns the exit code.
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if stdin == nil {
		stdin = strings.NewReader("")
	}
	return run(ctx, args, env{
		stdin:     stdin,
		stdout:    stdout,
		stderr:    stderr,
		getenv:    os.Getenv,
		newAPI:    func(socket string) API { return client.New(socket, client.WithUserAgent("pmgcm/"+Version)) },
		term:      newTerminal(stdin, stderr),
		stdoutTTY: isTerminalFile(stdout),
		stderrTTY: isTerminalFile(stderr),
	})
}

// env is what a run of pmgcm gets from outside; tests replace newAPI with a fake, term
// with a scripted terminal and shorten the timing.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	newAPI         func(socket string) API
	// term is the terminal that stdin is, for questions; nil when stdin is not a terminal.
	term terminal
	// stdoutTTY is true when stdout is a terminal too: progress then updates one line.
	stdoutTTY bool
	// stderrTTY is true when stderr is a terminal: backup and restore then show the bytes
	// transferred on one updating line.
	stderrTTY bool
	// timing of `pmgcm join` and `pmgcm sync` following the catch-up; zero fields take
	// the defaults.
	timing catchUpTiming
	// watch is the timing of `pmgcm config watch`; zero fields take the defaults.
	watch watchTiming
	// loc is the time zone that tables show times in; nil is the local one.
	loc *time.Location
}

// app holds the state of one run: the environment and the global flags.
type app struct {
	env
	socket  string
	timeout time.Duration
	// ran is set once a command's logic starts: errors from then on are runtime errors,
	// errors before it (flags, arguments, unknown commands) are usage errors.
	ran bool
}

// usageError is an error of the command line itself: it exits ExitUsage and shows usage.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usageErrorf(format string, a ...any) error {
	return &usageError{msg: fmt.Sprintf(format, a...)}
}

// run executes one command line and returns the exit code.
func run(ctx context.Context, args []string, e env) int {
	a := &app{env: e}
	root := a.rootCmd()
	if args == nil {
		args = []string{} // nil makes cobra read os.Args
	}
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return ExitOK
	}
	var ue *usageError
	if !a.ran || errors.As(err, &ue) {
		fmt.Fprintf(a.stderr, "pmgcm: %v\n", err)
		if cmd != nil {
			fmt.Fprintf(a.stderr, "\n%s", cmd.UsageString())
		}
		return ExitUsage
	}
	fmt.Fprintf(a.stderr, "pmgcm: %v\n", a.explain(err))
	return ExitError
}

// explain rewords errors whose raw text would not tell the operator what happened.
func (a *app) explain(err error) error {
	switch {
	case errors.Is(err, client.ErrUnreachable):
		return err
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("no answer from pmgclusterd at %s within %s; the daemon may be busy "+
			"or stuck (raise --timeout to wait longer): %w", a.socket, a.timeout, err)
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("interrupted: %w", err)
	}
	return err
}

// rootCmd builds the command tree of one run.
func (a *app) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "pmgcm",
		Short: "Manage the mail gateway cluster",
		Long: `pmgcm manages the high-availability cluster of the mail gateway: it creates the
cluster, adds and removes nodes, shows the status of its nodes, reads and writes the
replicated configuration, manages the replicated mail quarantine, and recovers from a
master failure (promote, sync).

Every command talks to the local pmgclusterd daemon over its control socket.

Shell completion: pmgcm completion bash|zsh prints the script to load, e.g.
  pmgcm completion bash > /etc/bash_completion.d/pmgcm`,
		Version:       Version,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(*cobra.Command, []string) error {
			if a.timeout < 0 {
				return usageErrorf("--timeout must not be negative")
			}
			if a.socket == "" {
				return usageErrorf("--socket must not be empty")
			}
			return nil
		},
	}
	root.CompletionOptions.HiddenDefaultCmd = true // named in Long, kept out of the command list
	root.SetVersionTemplate("pmgcm {{.Version}}\n")
	root.SetIn(a.stdin)
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)

	socket := a.getenv("PMGCM_SOCKET")
	if socket == "" {
		socket = DefaultSocketPath
	}
	pf := root.PersistentFlags()
	pf.StringVar(&a.socket, "socket", socket, "`PATH` of the control socket of pmgclusterd (env PMGCM_SOCKET)")
	pf.DurationVar(&a.timeout, "timeout", DefaultTimeout, "give up waiting for the daemon after this long (0: never)")

	root.AddCommand(a.createCmd(), a.joinCmd(), a.joinCmdCmd(), a.statusCmd(), a.deleteCmd(),
		a.promoteCmd(), a.syncCmd(), a.configCmd(), a.quarantineCmd(), a.backupCmd(), a.restoreCmd())
	root.AddCommand(a.updateFingerprintsCmd())
	root.AddCommand(a.reportCmd())
	return root
}

// runE adapts a command's logic to cobra: it marks the run as started, bounds it by
// --timeout and hands it the API of the chosen socket.
func (a *app) runE(fn func(ctx context.Context, c API, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		a.ran = true
		ctx := cmd.Context()
		if a.timeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, a.timeout)
			defer cancel()
		}
		return fn(ctx, a.newAPI(a.socket), args)
	}
}

// runLongE is runE for a command that asks questions or waits longer than --timeout: ctx
// is not bounded as a whole; the command bounds each call to the daemon with callCtx.
func (a *app) runLongE(fn func(ctx context.Context, c API, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		a.ran = true
		return fn(cmd.Context(), a.newAPI(a.socket), args)
	}
}

// callCtx bounds one call to the daemon by --timeout (0: unbounded).
func (a *app) callCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if a.timeout > 0 {
		return context.WithTimeout(ctx, a.timeout)
	}
	return context.WithCancel(ctx)
}

// posArgs returns a cobra argument check for the named positional arguments; names in square
// brackets are optional and must come last.
func posArgs(names ...string) cobra.PositionalArgs {
	required := 0
	for _, n := range names {
		if n[0] != '[' {
			required++
		}
	}
	return func(_ *cobra.Command, got []string) error {
		if len(got) < required {
			return usageErrorf("missing %s", names[len(got)])
		}
		if len(got) > len(names) {
			return usageErrorf("unexpected argument %q", got[len(names)])
		}
		return nil
	}
}
