// Package command builds the command line of pmgclusterd, the pmgcm node daemon: its flags,
// the optional TOML config file that holds the same settings (--config) and
// --print-config. cmd/pmgclusterd runs it; cmd/pmgcm-docs renders its manual page from it.
// It imports daemon and must never be imported by daemon or any other library package.
package command

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os/signal"
	"syscall"

	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"

	"github.com/pmgcm/pmgcm/daemon"
	"github.com/pmgcm/pmgcm/internal/logring"
	"github.com/pmgcm/pmgcm/internal/memlimit"
	"github.com/pmgcm/pmgcm/internal/version"
)

// Run runs pmgclusterd with args (without the program name) and returns the exit code.
// --print-config writes to stdout; logs and errors go to stderr.
func Run(args []string, stdout, stderr io.Writer) int {
	cmd := New(stderr)
	cmd.SetOut(stdout)
	cmd.SetErr(stderr)
	cmd.SetArgs(args)
	if err := cmd.Execute(); err != nil {
		fmt.Fprintf(stderr, "pmgclusterd: %v\n", err)
		return 1
	}
	return 0
}

// New returns the pmgclusterd command, whose logs go to stderr.
func New(stderr io.Writer) *cobra.Command {
	cfg := daemon.DefaultConfig()
	var logLevel string
	var logJSON bool
	var configFile string
	var printConfig bool
	memHeadroom := memlimit.DefaultHeadroom
	cmd := &cobra.Command{
		Use:   "pmgclusterd --data-dir DIR --ip IP [flags]",
		Short: "pmgcm node daemon: Raft, cluster port and control socket",
		Long: `pmgclusterd runs one node of a pmgcm mail gateway cluster. It keeps the node's state in
--data-dir, listens for other nodes on --ip:--port (mutual TLS), and serves the control
socket that the pmgcm command talks to. SIGTERM or SIGINT stop it cleanly.

Every setting can also come from a TOML file given with --config: its keys are the long
flag names without the dashes, e.g.

    data-dir = "/var/lib/pmgcm"
    ip = "192.168.2.127"
    raft-heartbeat-timeout = "500ms"
    config-export-prefix = ["pmg/"]

Flags given on the command line override the file. --print-config prints the settings in
effect, as such a file, and exits.

With --metrics-addr the daemon also serves the health checks GET /health/mail (200 while
this node takes mail: SMTP up, not draining or in maintenance, disk above
--min-free-disk, mail store writable; it does not depend on the Raft quorum) and GET
/health/cluster (200 while it is a member in state A with a master known), 503 otherwise,
each with a JSON body {"ok": BOOL, "reasons": [...]}, for HAProxy (option httpchk GET
/health/mail) or a keepalived vrrp_script.

Below --min-free-disk free space on the data directory's filesystem (checked every
second) SMTP answers 452 4.3.1 and configuration writes through this node are refused;
both resume by themselves once there is room.`,
		Example: "  pmgclusterd --config /etc/pmgcm/pmgclusterd.toml\n" +
			"  pmgclusterd --data-dir /var/lib/pmgcm --ip 192.168.2.127\n" +
			"  pmgclusterd --config /etc/pmgcm/pmgclusterd.toml --print-config",
		Args: cobra.NoArgs,
		Version: fmt.Sprintf("%s; node protocol %d, state format %d",
			version.String(), daemon.ProtocolVersion, daemon.StateFormat),
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if configFile != "" {
				if err := LoadConfigFile(cmd.Flags(), configFile); err != nil {
					return err
				}
			}
			if printConfig {
				return WriteConfig(cmd.OutOrStdout(), cmd.Flags())
			}
			level := hclog.LevelFromString(logLevel)
			if level == hclog.NoLevel {
				return fmt.Errorf("--log-level %q: use trace, debug, info, warn or error", logLevel)
			}
			var settings bytes.Buffer
			if err := WriteConfig(&settings, cmd.Flags()); err != nil {
				return err
			}
			cfg.Settings = settings.Bytes()
			cfg.LogRing = logring.New(0, 0) // the recent lines, for pmgcm report
			cfg.Logger = hclog.New(&hclog.LoggerOptions{
				Name: "pmgclusterd", Level: level, Output: io.MultiWriter(stderr, cfg.LogRing), JSONFormat: logJSON,
			})
			cfg.Raft.Logger = cfg.Logger
			// Process-wide, so here and not in daemon.New (tests run several daemons in one
			// process).
			gov, err := memlimit.Start(memlimit.Policy{Headroom: memHeadroom, Floor: memlimit.DefaultFloor}, cfg.Logger.Named("memory"))
			if err != nil {
				return fmt.Errorf("--memory-headroom: %w", err)
			}
			defer gov.Stop()
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			d, err := daemon.New(cfg)
			if err != nil {
				return err
			}
			if err := d.Open(); err != nil {
				return err
			}
			return d.Wait(ctx)
		},
	}
	cmd.SetVersionTemplate("pmgclusterd {{.Version}}\n")
	f := cmd.Flags()
	f.StringVar(&configFile, flagConfig, "", "read settings from this TOML `FILE`; flags override it")
	f.BoolVar(&printConfig, flagPrintConfig, false, "print the settings in effect as TOML (for --config) and exit")
	f.StringVar(&cfg.DataDir, "data-dir", "", "directory that holds this node's state (required)")
	f.StringVar(&cfg.IP, "ip", "", "this node's address, bound and advertised; cannot change after join (required)")
	f.IntVar(&cfg.Port, "port", cfg.Port, "cluster port (TLS) for other nodes")
	f.StringVar(&cfg.Name, "name", cfg.Name, "node name shown by pmgcm status (default: host name)")
	f.Lookup("name").DefValue = "" // the host name of this machine, not of the one that renders the help
	f.StringVar(&cfg.Socket, "socket", cfg.Socket, "path of the control socket")
	f.IntVar(&cfg.SMTPPort, "smtp-port", cfg.SMTPPort, "SMTP intake port on --ip (0: no SMTP intake)")
	f.IntVar(&cfg.SMTPMaxConnections, "smtp-max-connections", cfg.SMTPMaxConnections, "SMTP sessions open at once; past it new ones get 421 (0: 100, or less if the descriptor limit needs it)")
	f.IntVar(&cfg.SMTPMaxConnectionsPerIP, "smtp-max-connections-per-ip", cfg.SMTPMaxConnectionsPerIP, "SMTP sessions open at once from one client address; past it new ones get 421 (0: 50, or less if the descriptor limit needs it; at most --smtp-max-connections)")
	f.DurationVar(&cfg.SMTPIdleTimeout, "smtp-idle-timeout", cfg.SMTPIdleTimeout, "close an SMTP session that sends no command or data for this long")
	f.DurationVar(&cfg.SMTPSessionTimeout, "smtp-session-timeout", cfg.SMTPSessionTimeout, "close an SMTP session this long after it began, however active")
	f.DurationVar(&cfg.Raft.HeartbeatTimeout, "raft-heartbeat-timeout", cfg.Raft.HeartbeatTimeout, "time without contact from the master before a node starts an election")
	f.DurationVar(&cfg.Raft.ElectionTimeout, "raft-election-timeout", cfg.Raft.ElectionTimeout, "time a candidate waits for votes")
	f.DurationVar(&cfg.Raft.LeaderLeaseTimeout, "raft-leader-lease-timeout", cfg.Raft.LeaderLeaseTimeout, "time a master keeps leading without contact from a quorum")
	f.Uint64Var(&cfg.Raft.SnapshotThreshold, "raft-snapshot-threshold", cfg.Raft.SnapshotThreshold, "log entries between snapshots")
	f.DurationVar(&cfg.Raft.SnapshotInterval, "raft-snapshot-interval", cfg.Raft.SnapshotInterval, "how often to check whether a snapshot is due")
	f.Uint64Var(&cfg.Raft.TrailingLogs, "raft-trailing-logs", cfg.Raft.TrailingLogs, "log entries kept behind a snapshot")
	f.StringVar(&logLevel, "log-level", "info", "log level: trace, debug, info, warn, error")
	f.BoolVar(&logJSON, "log-json", false, "write logs as JSON lines")
	f.DurationVar(&cfg.SMTPDrainTimeout, "smtp-drain-timeout", cfg.SMTPDrainTimeout, "on stop, how long SMTP transactions in flight may take to finish (new connections are refused at once)")
	f.StringVar(&cfg.MetricsAddr, "metrics-addr", "", "serve Prometheus metrics on http://`IP:PORT`/metrics (off when empty)")
	f.Var(&cfg.MinFreeDisk, "min-free-disk", "free space on the data directory's filesystem below which SMTP answers 452 and configuration writes through this node are refused: a percentage (5%) or a size (500MiB, 2G); 0 turns the guard off")
	f.StringVar(&cfg.BackupDir, "backup-dir", "", "the master writes a consistent backup, with mail, into this `DIR` every --backup-interval (off when empty)")
	f.DurationVar(&cfg.BackupInterval, "backup-interval", cfg.BackupInterval, "time between two scheduled backups")
	f.IntVar(&cfg.BackupKeep, "backup-keep", cfg.BackupKeep, "scheduled backups kept in --backup-dir; older ones are removed")
	f.StringVar(&cfg.ExportDir, "config-export-dir", "", "write the configuration entries as files into this directory after each change (off when empty)")
	f.StringSliceVar(&cfg.ExportPrefixes, "config-export-prefix", nil, "export only the entries under this key prefix (repeatable; default: all)")
	f.IntVar(&memHeadroom, "memory-headroom", memHeadroom, fmt.Sprintf("after each garbage collection, keep Go's soft memory limit this many percent of the live heap above the memory in use (never below %d MiB), so that the resident set stays near the data; 0 leaves Go's default (the heap may grow to twice the live heap); GOMEMLIMIT in the environment overrides it", memlimit.DefaultFloor>>20))
	f.IntVar(&cfg.ProtocolVersion, "protocol-version", cfg.ProtocolVersion, "node-to-node protocol version to speak (compatibility drills only)")
	_ = f.MarkHidden("protocol-version")
	f.BoolVar(&cfg.FaultInjection, "fault-injection", false, "serve the partition control of drills and tests (never in production)")
	_ = f.MarkHidden("fault-injection")
	f.DurationVar(&cfg.TestClockOffset, "test-clock-offset", 0, "shift the clock this node reports to status by this much (tests of the clock-skew warning only)")
	_ = f.MarkHidden("test-clock-offset")
	// --data-dir and --ip are required, but may come from --config: daemon.Config.Validate
	// checks them once the file is read.
	return cmd
}
