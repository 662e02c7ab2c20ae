// Command pmgcm-bench measures a fresh localhost cluster of real pmgclusterd processes
// through the control-socket API that the pmgcm CLI uses (and SMTP for mail), and prints
// one line per workload: "workload=NAME key=value ...".
//
// It starts three daemons on loopback addresses 127.0.x.1-3 (a fourth on 127.0.x.4 for the
// join workload, and a fifth, 127.0.x.5, for join_mail after it; x is a block that no test or other bench running at the same time uses,
// see internal/testutil) with the daemon's default Raft settings, data in a temporary directory, and stops them
// on exit, also on Ctrl-C. `make bench` builds the daemon and runs it; see
// docs/performance.md for the figures and the limits they are held against.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/pmgcm/pmgcm/internal/testutil"
)

// allWorkloads in the order they run. failover and promote change the master on purpose;
// every other workload must cause no election. join runs last as it adds a fourth node;
// join_mail adds a fresh one too (the fifth after join).
var allWorkloads = []string{"env", "seq_put", "conc_put", "lin_get", "stale_get", "status", "mail", "promote", "failover", "rolling_restart", "join", "join_mail", "memory"}

// defaultWorkloads are those run without --workloads: all but join_mail, whose fill of
// 30,000 messages (600 MB on each of 4 nodes) would double the run of make bench.
var defaultWorkloads = []string{"env", "seq_put", "conc_put", "lin_get", "stale_get", "status", "mail", "promote", "failover", "rolling_restart", "join", "memory"}

// electionsExpected are the workloads that change the master on purpose.
var electionsExpected = map[string]bool{"promote": true, "failover": true, "rolling_restart": true}

type options struct {
	daemon     string
	workloads  []string
	keep       bool
	port       int
	valueSize  int
	seqDur     time.Duration
	concDur    time.Duration
	concCli    int
	getDur     time.Duration
	getCli     int
	failTrials int
	promTrials int
	joinMB     int
	joinValue  int
	mailMsgs   int
	mailSize   int
	mailConns  int
	// joinMailMsgs is the fill of join_mail.
	joinMailMsgs int
	statusN      int
	statusStop   int
}

func main() {
	os.Exit(run())
}

func run() int {
	var o options
	var wl string
	flag.StringVar(&o.daemon, "pmgclusterd", "bin/pmgclusterd", "path of the pmgclusterd binary (build it without -race)")
	flag.StringVar(&wl, "workloads", strings.Join(defaultWorkloads, ","), "comma-separated workloads to run, in this order: "+strings.Join(allWorkloads, ","))
	flag.BoolVar(&o.keep, "keep", false, "keep the data directory and the daemon logs")
	flag.IntVar(&o.port, "port", 0, "cluster port of every node (0: a port free on every address)")
	flag.IntVar(&o.valueSize, "value-size", 256, "value size of the put and get workloads, bytes")
	flag.DurationVar(&o.seqDur, "seq-duration", 5*time.Second, "duration of seq_put")
	flag.DurationVar(&o.concDur, "conc-duration", 10*time.Second, "duration of conc_put")
	flag.IntVar(&o.concCli, "conc-clients", 64, "clients of conc_put")
	flag.DurationVar(&o.getDur, "get-duration", 5*time.Second, "duration of lin_get and of stale_get")
	flag.IntVar(&o.getCli, "get-clients", 16, "clients of lin_get and stale_get")
	flag.IntVar(&o.failTrials, "failover-trials", 3, "trials of failover")
	flag.IntVar(&o.promTrials, "promote-trials", 5, "trials of promote")
	flag.IntVar(&o.joinMB, "join-mb", 50, "configuration written before the join workload, MB")
	flag.IntVar(&o.joinValue, "join-value-size", 256<<10, "value size of the join workload's configuration")
	flag.IntVar(&o.mailMsgs, "mail-messages", 2000, "messages of the mail workload")
	flag.IntVar(&o.mailSize, "mail-size", 20<<10, "size of each mail message, bytes")
	flag.IntVar(&o.mailConns, "mail-conns", 6, "concurrent SMTP connections of the mail workload (spread over the nodes)")
	flag.IntVar(&o.joinMailMsgs, "join-mail-messages", 30000, "quarantined messages in the cluster before join_mail joins a fresh node")
	flag.IntVar(&o.statusN, "status-samples", 100, "status calls on the healthy cluster")
	flag.IntVar(&o.statusStop, "status-stopped-samples", 6, "status calls with one node SIGSTOPped")
	flag.Parse()
	known := map[string]bool{}
	for _, w := range allWorkloads {
		known[w] = true
	}
	want := map[string]bool{}
	for _, w := range strings.Split(wl, ",") {
		w = strings.TrimSpace(w)
		if w == "" {
			continue
		}
		if !known[w] {
			fmt.Fprintf(os.Stderr, "pmgcm-bench: unknown workload %q (known: %s)\n", w, strings.Join(allWorkloads, ","))
			return 2
		}
		want[w] = true
	}
	for _, w := range allWorkloads {
		if want[w] {
			o.workloads = append(o.workloads, w)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := bench(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "pmgcm-bench:", err)
		return 1
	}
	return 0
}

// logf writes progress to stderr, so that stdout holds only the result lines.
func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "# "+format+"\n", args...)
}

func bench(ctx context.Context, o options) error {
	if _, err := os.Stat(o.daemon); err != nil {
		return fmt.Errorf("pmgclusterd binary: %w (build it with: go build -o bin/pmgclusterd ./cmd/pmgclusterd)", err)
	}
	help, _ := exec.Command(o.daemon, "--help").CombinedOutput()
	smtp := strings.Contains(string(help), "smtp-port")

	ips := testutil.IPs(5) // 127.0.x.1-5 of a block that no test running at the same time uses
	ports, err := testutil.FreePorts(ips, 2)
	if err != nil {
		return err
	}
	port, smtpPort := ports[0], ports[1]
	if o.port != 0 {
		port = o.port
	}
	if !smtp {
		smtpPort = 0
	}
	dir, err := os.MkdirTemp("", "pmgcm-bench-")
	if err != nil {
		return err
	}
	c := newCluster(dir, o.daemon, ips, port, smtpPort)
	defer func() {
		logf("stopping the cluster")
		c.stopAll(15 * time.Second)
		if o.keep {
			logf("data and logs kept in %s", dir)
		} else {
			_ = os.RemoveAll(dir)
		}
	}()

	b := &bencher{o: o, c: c, smtp: smtp, value: make([]byte, o.valueSize)}
	for i := range b.value {
		b.value[i] = 'a' + byte(i%26)
	}
	start := time.Now()
	if want(o.workloads, "env") {
		b.env(ctx, dir)
	}
	logf("starting 3 nodes on %s port %d (data in %s)", strings.Join(ips[:3], ","), port, dir)
	for _, n := range c.nodes[:3] {
		if err := n.start(ctx); err != nil {
			return err
		}
	}
	if err := c.create(ctx, c.nodes[:3]); err != nil {
		return err
	}
	logf("cluster of 3 ready after %s", time.Since(start).Round(time.Millisecond))

	prev := c.observe(ctx)
	spurious, changes := 0, 0
	var culprits []string
	for _, w := range o.workloads {
		if w == "env" {
			continue
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		logf("running %s", w)
		if err := b.runWorkload(ctx, w); err != nil {
			fmt.Println(line(w, kv{"error", err.Error()}))
			if errors.Is(err, context.Canceled) {
				return err
			}
		}
		now := c.observe(ctx)
		if !electionsExpected[w] && now.term > prev.term {
			spurious += int(now.term - prev.term)
			culprits = append(culprits, w)
		}
		if !electionsExpected[w] && now.leader != prev.leader {
			changes++
		}
		prev = now
	}
	fields := []kv{{"spurious_elections", spurious}, {"leader_changes", changes}}
	if len(culprits) > 0 {
		fields = append(fields, kv{"during", strings.Join(culprits, ",")})
	}
	fields = append(fields, kv{"final_term", prev.term}, kv{"total_s", fmt.Sprintf("%.1f", time.Since(start).Seconds())})
	fmt.Println(line("summary", fields...))
	return nil
}

func want(list []string, w string) bool {
	for _, x := range list {
		if x == w {
			return true
		}
	}
	return false
}
