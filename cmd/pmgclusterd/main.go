// Command pmgclusterd is the pmgcm node daemon: it runs Raft, the cluster port (TLS) and
// the control socket that the pmgcm CLI talks to.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"

	"github.com/pmgcm/pmgcm/daemon"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

func run(args []string, stderr io.Writer) int {
	cmd := newCommand(stderr)
	cmd.SetArgs(args)
	if err := cmd.Execute(); err != nil {
		fmt.Fprintf(stderr, "pmgclusterd: %v\n", err)
		return 1
	}
	return 0
}

func newCommand(stderr io.Writer) *cobra.Command {
	cfg := daemon.DefaultConfig()
	var logLevel string
	var logJSON bool
	cmd := &cobra.Command{
		Use:   "pmgclusterd --data-dir DIR --ip IP [flags]",
		Short: "pmgcm node daemon: Raft, cluster port and control socket",
		Long: `pmgclusterd runs one node of a pmgcm mail gateway cluster. It keeps the node's state in
--data-dir, listens for other nodes on --ip:--port (mutual TLS), and serves the control
socket that the pmgcm command talks to. SIGTERM or SIGINT stop it cleanly.`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			level := hclog.LevelFromString(logLevel)
			if level == hclog.NoLevel {
				return fmt.Errorf("--log-level %q: use trace, debug, info, warn or error", logLevel)
			}
			cfg.Logger = hclog.New(&hclog.LoggerOptions{
				Name: "pmgclusterd", Level: level, Output: stderr, JSONFormat: logJSON,
			})
			cfg.Raft.Logger = cfg.Logger
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
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data-dir", "", "directory that holds this node's state (required)")
	f.StringVar(&cfg.IP, "ip", "", "this node's address, bound and advertised; cannot change after join (required)")
	f.IntVar(&cfg.Port, "port", cfg.Port, "cluster port (TLS) for other nodes")
	f.StringVar(&cfg.Name, "name", cfg.Name, "node name shown by pmgcm status (default: host name)")
	f.StringVar(&cfg.Socket, "socket", cfg.Socket, "path of the control socket")
	f.IntVar(&cfg.SMTPPort, "smtp-port", cfg.SMTPPort, "SMTP intake port on --ip (0: no SMTP intake)")
	f.DurationVar(&cfg.Raft.HeartbeatTimeout, "raft-heartbeat-timeout", cfg.Raft.HeartbeatTimeout, "time without contact from the master before a node starts an election")
	f.DurationVar(&cfg.Raft.ElectionTimeout, "raft-election-timeout", cfg.Raft.ElectionTimeout, "time a candidate waits for votes")
	f.DurationVar(&cfg.Raft.LeaderLeaseTimeout, "raft-leader-lease-timeout", cfg.Raft.LeaderLeaseTimeout, "time a master keeps leading without contact from a quorum")
	f.Uint64Var(&cfg.Raft.SnapshotThreshold, "raft-snapshot-threshold", cfg.Raft.SnapshotThreshold, "log entries between snapshots")
	f.DurationVar(&cfg.Raft.SnapshotInterval, "raft-snapshot-interval", cfg.Raft.SnapshotInterval, "how often to check whether a snapshot is due")
	f.Uint64Var(&cfg.Raft.TrailingLogs, "raft-trailing-logs", cfg.Raft.TrailingLogs, "log entries kept behind a snapshot")
	f.StringVar(&logLevel, "log-level", "info", "log level: trace, debug, info, warn, error")
	f.BoolVar(&logJSON, "log-json", false, "write logs as JSON lines")
	f.StringVar(&cfg.ExportDir, "config-export-dir", "", "write the configuration entries as files into this directory after each change (off when empty)")
	f.StringSliceVar(&cfg.ExportPrefixes, "config-export-prefix", nil, "export only the entries under this key prefix (repeatable; default: all)")
	f.IntVar(&cfg.ProtocolVersion, "protocol-version", cfg.ProtocolVersion, "node-to-node protocol version to speak (compatibility drills only)")
	_ = f.MarkHidden("protocol-version")
	f.BoolVar(&cfg.FaultInjection, "fault-injection", false, "serve the partition control of drills and tests (never in production)")
	_ = f.MarkHidden("fault-injection")
	_ = cmd.MarkFlagRequired("data-dir")
	_ = cmd.MarkFlagRequired("ip")
	return cmd
}
