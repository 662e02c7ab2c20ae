package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pmgcm/pmgcm/api"
	apiclient "github.com/pmgcm/pmgcm/api/client"
	"github.com/pmgcm/pmgcm/internal/testutil"
)

// bencher runs the workloads against the cluster.
type bencher struct {
	o     options
	c     *cluster
	smtp  bool
	value []byte
}

// opTimeout bounds one operation of a throughput workload.
const opTimeout = 10 * time.Second

func (b *bencher) runWorkload(ctx context.Context, w string) error {
	switch w {
	case "seq_put":
		return b.seqPut(ctx)
	case "conc_put":
		return b.concPut(ctx)
	case "lin_get":
		return b.get(ctx, "lin_get", false)
	case "stale_get":
		return b.get(ctx, "stale_get", true)
	case "status":
		return b.status(ctx)
	case "mail":
		return b.mail(ctx)
	case "promote":
		return b.promote(ctx)
	case "failover":
		return b.failover(ctx)
	case "join":
		return b.join(ctx)
	case "join_mail":
		return b.joinMail(ctx)
	case "memory":
		return b.memory(ctx)
	case "rolling_restart":
		return b.rollingRestart(ctx)
	}
	return fmt.Errorf("unknown workload %q", w)
}

// env measures the machine: the disk's fsyncs/s in the data directory and loopback TCP
// bandwidth, the limits the workloads are held against.
func (b *bencher) env(ctx context.Context, dir string) {
	fsyncs, ferr := fsyncRate(ctx, dir, time.Second)
	mbps, lerr := loopbackRate(ctx, time.Second)
	fields := []kv{{"cpus", runtime.NumCPU()}, {"cpu", cpuModel()}, {"fsyncs_per_s", fmt.Sprintf("%.0f", fsyncs)},
		{"loopback_mb_per_s", fmt.Sprintf("%.0f", mbps)}}
	if err := errors.Join(ferr, lerr); err != nil {
		fields = append(fields, kv{"error", err.Error()})
	}
	fmt.Println(line("env", fields...))
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return runtime.GOARCH
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return runtime.GOARCH
}

// fsyncRate appends 4 KiB blocks to a file in dir, each followed by fsync, for d: the
// rate a write-ahead log that syncs every write gets (dd oflag=dsync bs=4k).
func fsyncRate(ctx context.Context, dir string, d time.Duration) (float64, error) {
	path := filepath.Join(dir, "fsync-test")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, err
	}
	defer os.Remove(path)
	defer f.Close()
	buf := make([]byte, 4096)
	n := 0
	start := time.Now()
	for time.Since(start) < d && ctx.Err() == nil {
		if _, err := f.Write(buf); err != nil {
			return 0, err
		}
		if err := f.Sync(); err != nil {
			return 0, err
		}
		n++
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// loopbackRate measures one plain TCP stream over loopback for d, in MB/s.
func loopbackRate(ctx context.Context, d time.Duration) (float64, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	got := make(chan int64, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			got <- 0
			return
		}
		n, _ := io.Copy(io.Discard, conn)
		_ = conn.Close()
		got <- n
	}()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return 0, err
	}
	buf := make([]byte, 256<<10)
	start := time.Now()
	for time.Since(start) < d && ctx.Err() == nil {
		if _, err := conn.Write(buf); err != nil {
			break
		}
	}
	_ = conn.Close()
	n := <-got
	return float64(n) / 1e6 / time.Since(start).Seconds(), nil
}

// client returns a new control-socket client of n: one per load worker, so that each
// keeps its own connection as a separate pmgcm process would have.
func client(n *node) *apiclient.Client { return apiclient.New(n.socket) }

// timedLoop runs workers workers, worker i calling op(i, seq) until d has passed, and
// returns the latencies of the successful calls and the elapsed time.
func timedLoop(ctx context.Context, workers int, d time.Duration, op func(ctx context.Context, worker, seq int) error) (*latencies, time.Duration) {
	var l latencies
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(d)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := 0; time.Now().Before(deadline) && ctx.Err() == nil; seq++ {
				t0 := time.Now()
				octx, cancel := context.WithTimeout(ctx, opTimeout)
				err := op(octx, w, seq)
				cancel()
				if err != nil {
					l.fail()
					continue
				}
				l.add(time.Since(t0))
			}
		}()
	}
	wg.Wait()
	return &l, time.Since(start)
}

func (b *bencher) seqPut(ctx context.Context) error {
	leader, err := b.c.leader(ctx)
	if err != nil {
		return err
	}
	cl := client(leader)
	cpu := b.c.startCPU()
	l, el := timedLoop(ctx, 1, b.o.seqDur, func(ctx context.Context, _, seq int) error {
		_, err := cl.ConfigSet(ctx, fmt.Sprintf("bench/seq/%d", seq%1000), b.value, apiclient.WriteOptions{})
		return err
	})
	s, errs := l.snapshot()
	fmt.Println(line("seq_put", append(append([]kv{{"clients", 1}, {"via", "master"}, {"value_bytes", len(b.value)}},
		latencyFields(s, errs, el)...), cpu.fields(len(s))...)...))
	return nil
}

func (b *bencher) concPut(ctx context.Context) error {
	members := b.c.members()
	clients := make([]*apiclient.Client, b.o.concCli)
	for i := range clients {
		clients[i] = client(members[i%len(members)])
	}
	cpu := b.c.startCPU()
	l, el := timedLoop(ctx, len(clients), b.o.concDur, func(ctx context.Context, w, seq int) error {
		_, err := clients[w].ConfigSet(ctx, fmt.Sprintf("bench/conc/%d/%d", w, seq%64), b.value, apiclient.WriteOptions{})
		return err
	})
	s, errs := l.snapshot()
	fmt.Println(line("conc_put", append(append([]kv{{"clients", len(clients)}, {"nodes", len(members)}, {"value_bytes", len(b.value)}},
		latencyFields(s, errs, el)...), cpu.fields(len(s))...)...))
	return nil
}

func (b *bencher) get(ctx context.Context, name string, stale bool) error {
	members := b.c.members()
	const keys = 100
	setup := client(members[0])
	for k := 0; k < keys; k++ {
		key := fmt.Sprintf("bench/get/%d", k)
		if _, err := setup.ConfigGet(ctx, key, apiclient.ReadOptions{Stale: true}); err == nil {
			continue
		}
		octx, cancel := context.WithTimeout(ctx, opTimeout)
		_, err := setup.ConfigSet(octx, key, b.value, apiclient.WriteOptions{})
		cancel()
		if err != nil {
			return fmt.Errorf("writing the keys to read: %w", err)
		}
	}
	// Every node must have applied the keys before stale reads count as hits.
	if err := b.c.waitActive(ctx, members, 30*time.Second); err != nil {
		return err
	}
	clients := make([]*apiclient.Client, b.o.getCli)
	for i := range clients {
		clients[i] = client(members[i%len(members)])
	}
	var wrong atomic.Int64
	cpu := b.c.startCPU()
	l, el := timedLoop(ctx, len(clients), b.o.getDur, func(ctx context.Context, w, seq int) error {
		v, err := clients[w].ConfigGet(ctx, fmt.Sprintf("bench/get/%d", (w*7+seq)%keys), apiclient.ReadOptions{Stale: stale})
		if err == nil && len(v.Value) != len(b.value) {
			wrong.Add(1)
		}
		return err
	})
	s, errs := l.snapshot()
	fields := append([]kv{{"clients", len(clients)}, {"nodes", len(members)}, {"value_bytes", len(b.value)}},
		latencyFields(s, errs, el)...)
	fields = append(fields, cpu.fields(len(s))...)
	if n := wrong.Load(); n > 0 {
		fields = append(fields, kv{"wrong_values", n})
	}
	fmt.Println(line(name, fields...))
	return nil
}

// status times Status calls (what `pmgcm status` does) round-robin over the members, then
// with a follower SIGSTOPped, on the other nodes.
func (b *bencher) status(ctx context.Context) error {
	members := b.c.members()
	var healthy latencies
	clients := make([]*apiclient.Client, len(members))
	for i, n := range members {
		clients[i] = client(n)
	}
	start := time.Now()
	for i := 0; i < b.o.statusN && ctx.Err() == nil; i++ {
		t0 := time.Now()
		octx, cancel := context.WithTimeout(ctx, opTimeout)
		st, err := clients[i%len(clients)].Status(octx)
		cancel()
		if err != nil || !allActive(st) {
			healthy.fail()
			continue
		}
		healthy.add(time.Since(t0))
	}
	el := time.Since(start)

	leader, err := b.c.leader(ctx)
	if err != nil {
		return err
	}
	var paused *node
	var others []*apiclient.Client
	for i, n := range members {
		if n != leader && paused == nil {
			paused = n
			continue
		}
		others = append(others, clients[i])
	}
	var stopped latencies
	downShown := 0
	paused.signal(syscall.SIGSTOP)
	for i := 0; i < b.o.statusStop && ctx.Err() == nil; i++ {
		t0 := time.Now()
		octx, cancel := context.WithTimeout(ctx, opTimeout)
		st, err := others[i%len(others)].Status(octx)
		cancel()
		if err != nil {
			stopped.fail()
			continue
		}
		stopped.add(time.Since(t0))
		for _, row := range st.Nodes {
			if row.CID == paused.cid && row.State == api.StateDown {
				downShown++
			}
		}
	}
	paused.signal(syscall.SIGCONT)
	s, errs := healthy.snapshot()
	ss, serrs := stopped.snapshot()
	fields := append([]kv{{"nodes", len(members)}}, latencyFields(s, errs, el)...)
	fields = append(fields,
		kv{"stopped_node", paused.name}, kv{"stopped_calls", len(ss)},
		kv{"stopped_p50_ms", ms(percentile(ss, 50))}, kv{"stopped_p99_ms", ms(percentile(ss, 99))},
		kv{"stopped_shown_down", downShown}, kv{"stopped_errors", serrs})
	fmt.Println(line("status", fields...))
	return b.c.waitActive(ctx, members, 60*time.Second)
}

func allActive(st *api.Status) bool {
	if st.Cluster == nil || st.Cluster.LeaderCID == 0 {
		return false
	}
	for _, row := range st.Nodes {
		if row.State != api.StateActive {
			return false
		}
	}
	return true
}

// promote: graceful promote of a follower, the time until Promote returns (the node is
// master) and until a write through it is acknowledged.
func (b *bencher) promote(ctx context.Context) error {
	members := b.c.members()
	var toMaster, toWrite []time.Duration
	errs := 0
	for trial := 0; trial < b.o.promTrials && ctx.Err() == nil; trial++ {
		leader, err := b.c.leader(ctx)
		if err != nil {
			return err
		}
		var followers []*node
		for _, n := range members {
			if n != leader {
				followers = append(followers, n)
			}
		}
		f := followers[trial%len(followers)]
		cl := client(f)
		octx, cancel := context.WithTimeout(ctx, 30*time.Second)
		t0 := time.Now()
		_, err = cl.Promote(octx, false)
		tp := time.Since(t0)
		if err == nil {
			_, err = cl.ConfigSet(octx, "bench/promote", b.value, apiclient.WriteOptions{})
		}
		tw := time.Since(t0)
		cancel()
		if err != nil {
			errs++
			logf("promote trial %d on %s: %v", trial+1, f.name, err)
			toMaster, toWrite = append(toMaster, -1), append(toWrite, -1)
		} else {
			toMaster, toWrite = append(toMaster, tp), append(toWrite, tw)
			logf("promote trial %d: %s master after %s, write acknowledged after %s", trial+1, f.name, ms(tp)+"ms", ms(tw)+"ms")
		}
		if err := b.c.waitActive(ctx, members, 60*time.Second); err != nil {
			return err
		}
	}
	fmt.Println(line("promote", kv{"trials", len(toMaster)},
		kv{"master_ms", msList(toMaster)}, kv{"write_ms", msList(toWrite)},
		kv{"median_master_ms", ms(median(valid(toMaster)))}, kv{"median_write_ms", ms(median(valid(toWrite)))},
		kv{"p50_ms", ms(median(valid(toWrite)))}, kv{"errors", errs}))
	return nil
}

// valid drops the missing values (< 0) of a trial list.
func valid(ds []time.Duration) []time.Duration {
	var out []time.Duration
	for _, d := range ds {
		if d >= 0 {
			out = append(out, d)
		}
	}
	return out
}

// failover: writers on a follower, kill -9 of the master; the time from the kill to the
// first acknowledged write issued after it, and to a new master seen by a survivor.
func (b *bencher) failover(ctx context.Context) error {
	members := b.c.members()
	var toWrite, toMaster []time.Duration
	failedWrites := 0
	for trial := 0; trial < b.o.failTrials && ctx.Err() == nil; trial++ {
		leader, err := b.c.leader(ctx)
		if err != nil {
			return err
		}
		var survivors []*node
		for _, n := range members {
			if n != leader {
				survivors = append(survivors, n)
			}
		}
		writerNode := survivors[trial%len(survivors)]
		tw, tm, fails := b.failoverTrial(ctx, leader, writerNode, survivors)
		failedWrites += fails
		toWrite, toMaster = append(toWrite, tw), append(toMaster, tm)
		logf("failover trial %d: killed %s (writer on %s): write after %sms, new master after %sms",
			trial+1, leader.name, writerNode.name, msList([]time.Duration{tw}), msList([]time.Duration{tm}))
		if err := leader.start(ctx); err != nil {
			return err
		}
		if err := b.c.waitActive(ctx, members, 60*time.Second); err != nil {
			return err
		}
	}
	fmt.Println(line("failover", kv{"trials", len(toWrite)},
		kv{"write_ms", msList(toWrite)}, kv{"master_ms", msList(toMaster)},
		kv{"median_write_ms", ms(median(valid(toWrite)))}, kv{"median_master_ms", ms(median(valid(toMaster)))},
		kv{"p50_ms", ms(median(valid(toWrite)))}, kv{"failed_writes", failedWrites},
		kv{"errors", len(toWrite) - len(valid(toWrite))}))
	return nil
}

func (b *bencher) failoverTrial(ctx context.Context, leader, writerNode *node, survivors []*node) (toWrite, toMaster time.Duration, fails int) {
	toWrite, toMaster = -1, -1
	tctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu       sync.Mutex
		killAt   time.Time
		firstAck time.Time
		newMast  time.Time
		nfail    int
		acked    = make(chan struct{}, 1)
		mastered = make(chan struct{}, 1)
		warm     = make(chan struct{}, 1)
		wg       sync.WaitGroup
	)
	const writers = 4
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := client(writerNode)
			for seq := 0; tctx.Err() == nil; seq++ {
				t0 := time.Now()
				octx, ocancel := context.WithTimeout(tctx, 5*time.Second)
				_, err := cl.ConfigSet(octx, fmt.Sprintf("bench/failover/%d", w), b.value, apiclient.WriteOptions{})
				ocancel()
				now := time.Now()
				mu.Lock()
				if err != nil {
					if tctx.Err() == nil {
						nfail++
					}
				} else if !killAt.IsZero() && !t0.Before(killAt) && firstAck.IsZero() {
					firstAck = now
					signal1(acked)
				} else if killAt.IsZero() {
					signal1(warm)
				}
				mu.Unlock()
				if err != nil {
					select {
					case <-tctx.Done():
					case <-time.After(5 * time.Millisecond):
					}
				}
			}
		}()
	}
	// Wait until the writers run, then kill the master.
	select {
	case <-warm:
	case <-time.After(10 * time.Second):
	}
	mu.Lock()
	killAt = time.Now()
	mu.Unlock()
	leader.kill()
	for _, s := range survivors {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := client(s)
			for tctx.Err() == nil {
				octx, ocancel := context.WithTimeout(tctx, time.Second)
				st, err := cl.Status(octx)
				ocancel()
				now := time.Now()
				if err == nil && st.Cluster != nil && st.Cluster.LeaderCID != 0 && st.Cluster.LeaderCID != leader.cid {
					mu.Lock()
					if newMast.IsZero() {
						newMast = now
						signal1(mastered)
					}
					mu.Unlock()
					return
				}
				select {
				case <-tctx.Done():
				case <-time.After(10 * time.Millisecond):
				}
			}
		}()
	}
	timeout := time.After(30 * time.Second)
	for got := 0; got < 2; {
		select {
		case <-acked:
			got++
		case <-mastered:
			got++
		case <-timeout:
			got = 2
		case <-ctx.Done():
			got = 2
		}
	}
	cancel()
	wg.Wait()
	if !firstAck.IsZero() {
		toWrite = firstAck.Sub(killAt)
	}
	if !newMast.IsZero() {
		toMaster = newMast.Sub(killAt)
	}
	return toWrite, toMaster, nfail
}

func signal1(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// join writes the configuration (50 MB by default) with concurrent writers, then times a
// fresh fourth node from the join request until it shows itself in state A.
func (b *bencher) join(ctx context.Context) error {
	if len(b.c.nodes) < 4 {
		return errors.New("no fourth node")
	}
	members := b.c.members()
	total := int64(b.o.joinMB) << 20
	count := int((total + int64(b.o.joinValue) - 1) / int64(b.o.joinValue))
	value := make([]byte, b.o.joinValue)
	for i := range value {
		value[i] = 'A' + byte(i%26)
	}
	const writers = 8
	var next atomic.Int64
	var werr atomic.Int64
	var wg sync.WaitGroup
	t0 := time.Now()
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := client(members[w%len(members)])
			for {
				i := int(next.Add(1)) - 1
				if i >= count || ctx.Err() != nil {
					return
				}
				octx, cancel := context.WithTimeout(ctx, 60*time.Second)
				_, err := cl.ConfigSet(octx, fmt.Sprintf("bench/join/%04d", i), value, apiclient.WriteOptions{})
				cancel()
				if err != nil {
					werr.Add(1)
					logf("join: writing entry %d: %v", i, err)
				}
			}
		}()
	}
	wg.Wait()
	writeTime := time.Since(t0)
	if err := b.c.waitActive(ctx, members, 60*time.Second); err != nil {
		return err
	}
	logf("join: wrote %d entries of %d bytes in %s", count, len(value), writeTime.Round(time.Millisecond))

	n := b.c.nodes[3]
	if err := n.start(ctx); err != nil {
		return err
	}
	start := time.Now()
	if err := b.c.join(ctx, n); err != nil {
		return err
	}
	admitted := time.Since(start)
	err := testutil.WaitEvery(ctx, n.name+" in state A", 120*time.Second, 10*time.Millisecond, func() error {
		octx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		st, err := n.client.Status(octx)
		if err != nil {
			return err
		}
		for _, row := range st.Nodes {
			if row.Local {
				if row.State != api.StateActive {
					return fmt.Errorf("state %s", row.State)
				}
				return nil
			}
		}
		return errors.New("no local row")
	})
	active := time.Since(start)
	errs := int(werr.Load())
	if err != nil {
		errs++
	}
	fmt.Println(line("join", kv{"config_mb", fmt.Sprintf("%.1f", float64(count*len(value))/(1<<20))},
		kv{"entries", count}, kv{"write_mb_per_s", fmt.Sprintf("%.1f", float64(count*len(value))/(1<<20)/writeTime.Seconds())},
		kv{"admitted_ms", ms(admitted)}, kv{"active_ms", ms(active)}, kv{"p50_ms", ms(active)}, kv{"errors", errs}))
	if err != nil {
		return err
	}
	return b.c.waitActive(ctx, b.c.members(), 60*time.Second)
}
