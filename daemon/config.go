package daemon

import (
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pmgcm/pmgcm/internal/logring"
	"github.com/pmgcm/pmgcm/raftnode"
	"github.com/pmgcm/pmgcm/smtpd"
)

// DefaultPort is the cluster port (TLS) of a node.
const DefaultPort = 8006

// DefaultSocket is where the control socket lives unless --socket says otherwise.
const DefaultSocket = "/run/pmgcm/pmgcm.sock"

// Config holds the daemon's settings. Build it from DefaultConfig; New validates it.
type Config struct {
	// DataDir holds all of the node's state.
	DataDir string
	// IP is the node's address, bound and advertised. It cannot change after join.
	IP string
	// Port is the cluster port (TLS).
	Port int
	// Name is the node's name in status; defaults to the host name.
	Name string
	// Socket is the path of the control socket.
	Socket string
	// SMTPPort is the port of SMTP intake on IP; 0 disables it.
	SMTPPort int
	// SMTPMaxConnections and SMTPMaxConnectionsPerIP cap the SMTP sessions open at once,
	// in all and per client address; zero sizes them from the descriptor limit (at most
	// Postfix's 100 and 50). SMTPIdleTimeout bounds the wait for a command or data,
	// SMTPSessionTimeout a whole session.
	SMTPMaxConnections, SMTPMaxConnectionsPerIP int
	SMTPIdleTimeout, SMTPSessionTimeout         time.Duration
	// Raft holds the Raft timers and snapshot settings; Dir, LocalID and Address are
	// filled in by the daemon.
	Raft raftnode.Config
	// RPCTimeout bounds one request to another node (status, forwarding).
	RPCTimeout time.Duration
	// SMTPDrainTimeout bounds how long a stop lets the SMTP transactions in flight finish
	// (the listener closes first; see smtpd.Server.Drain).
	SMTPDrainTimeout time.Duration
	// ExportDir, if set, receives the configuration entries under ExportPrefixes (all
	// when empty) as files, rewritten atomically after each applied change.
	ExportDir      string
	ExportPrefixes []string
	// FaultInjection serves api.PathDebugPartition: drills and tests only.
	FaultInjection bool
	// ProtocolVersion is the node-to-node protocol version this node speaks; only
	// compatibility drills set it to anything but ProtocolVersion.
	ProtocolVersion int
	// MetricsAddr, if set, is the "ip:port" where Prometheus metrics are served on
	// /metrics (off when empty).
	MetricsAddr string
	// MinFreeDisk is the free space on the data directory's filesystem below which SMTP
	// answers 452 and configuration writes through this node are refused (zero: off).
	MinFreeDisk DiskSize
	// LogRing, if set, holds the daemon's recent log lines for pmgcm report; the
	// caller makes Logger write into it too.
	LogRing *logring.Ring
	// TestClockOffset shifts the wall clock this node reports to status (the
	// clock-skew check): tests of that check only, never in production.
	TestClockOffset time.Duration
	// Settings, if set, is the text of the settings in effect (pmgclusterd
	// --print-config), without secrets, for pmgcm report.
	Settings []byte
	// Logger receives the daemon's logs.
	Logger hclog.Logger
}

// DefaultConfig returns the defaults of every setting but DataDir and IP.
func DefaultConfig() Config {
	name, _ := os.Hostname()
	return Config{
		Port:       DefaultPort,
		Name:       name,
		Socket:     DefaultSocket,
		Raft:       raftnode.DefaultConfig(),
		RPCTimeout: 2 * time.Second,

		SMTPIdleTimeout:    smtpd.DefaultReadTimeout,
		SMTPSessionTimeout: smtpd.DefaultSessionTimeout,

		ProtocolVersion: ProtocolVersion,

		SMTPDrainTimeout: smtpd.DefaultDrainTimeout,
		MinFreeDisk:      DefaultMinFreeDisk,
	}
}

// Validate reports the first setting that cannot work, saying how to fix it.
func (c Config) Validate() error {
	if c.DataDir == "" {
		return errors.New("--data-dir is required (flag or data-dir in the --config file): the directory that holds this node's state")
	}
	if c.IP == "" {
		return errors.New("--ip is required (flag or ip in the --config file): the address other nodes reach this one at")
	}
	ip := net.ParseIP(c.IP)
	if ip == nil {
		return fmt.Errorf("--ip %q is not an IP address: give the address other nodes reach this one at", c.IP)
	}
	if ip.IsUnspecified() {
		return fmt.Errorf("--ip %s is not a usable address: give the node's own address, it is advertised to other nodes", c.IP)
	}
	if c.Port < 1 || c.Port > 65535 {
		return fmt.Errorf("--port %d is out of range 1-65535", c.Port)
	}
	if c.Name == "" || len(c.Name) > 64 {
		return errors.New("--name must be 1 to 64 characters")
	}
	for _, r := range c.Name {
		if !(r == '-' || r == '.' || r == '_' || (r >= '0' && r <= '9') || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z')) {
			return fmt.Errorf("--name %q may hold only letters, digits, '-', '.' and '_'", c.Name)
		}
	}
	if c.SMTPPort < 0 || c.SMTPPort > 65535 {
		return fmt.Errorf("--smtp-port %d is out of range 0-65535", c.SMTPPort)
	}
	if c.SMTPPort != 0 && c.SMTPPort == c.Port {
		return fmt.Errorf("--smtp-port %d is the cluster port: give SMTP its own port", c.SMTPPort)
	}
	if c.SMTPMaxConnections < 0 || c.SMTPMaxConnectionsPerIP < 0 {
		return errors.New("--smtp-max-connections and --smtp-max-connections-per-ip must not be negative (0: sized from the descriptor limit)")
	}
	if c.SMTPMaxConnections > 0 && c.SMTPMaxConnectionsPerIP > c.SMTPMaxConnections {
		return fmt.Errorf("--smtp-max-connections-per-ip %d is more than --smtp-max-connections %d: lower it, or raise the total",
			c.SMTPMaxConnectionsPerIP, c.SMTPMaxConnections)
	}
	if c.SMTPIdleTimeout <= 0 || c.SMTPSessionTimeout <= 0 {
		return errors.New("--smtp-idle-timeout and --smtp-session-timeout must be positive")
	}
	if c.Socket == "" {
		return errors.New("--socket must not be empty")
	}
	if c.RPCTimeout <= 0 {
		return errors.New("RPC timeout must be positive")
	}
	if c.SMTPDrainTimeout < 0 {
		return fmt.Errorf("--smtp-drain-timeout %s is negative: give how long a stop lets SMTP transactions in flight finish", c.SMTPDrainTimeout)
	}
	if c.MetricsAddr != "" {
		if _, _, err := net.SplitHostPort(c.MetricsAddr); err != nil {
			return fmt.Errorf("--metrics-addr %q: want IP:PORT: %v", c.MetricsAddr, err)
		}
	}
	if err := c.MinFreeDisk.validate(); err != nil {
		return err
	}
	return nil
}

// Addr is the node's cluster address, "ip:port".
func (c Config) Addr() string { return net.JoinHostPort(c.IP, fmt.Sprint(c.Port)) }
