package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pmgcm/pmgcm/api"
	apiclient "github.com/pmgcm/pmgcm/api/client"
)

// rollingWritersPerNode is how many writers of rolling_restart go through each node.
const rollingWritersPerNode = 2

// rollingMasterDown is how long the master stays down in the second run of
// rolling_restart before it starts again.
const rollingMasterDown = 3 * time.Second

// rollingNode is the load of rolling_restart through one node: its writers' counts and
// the longest time without an acknowledged write through it while it was up.
type rollingNode struct {
	n *node

	mu        sync.Mutex
	down      bool      // the bench is restarting this node: its writers wait
	since     time.Time // the last ack through this node, or when it came back up
	maxGap    time.Duration
	acked     int
	failDown  int // failed writes through this node while it was being restarted
	failUp    int // failed writes through this node while another one was restarted or none
	unknown   int // of the failed writes: outcome unknown
	upChanged chan struct{}
}

// rollingRun is one run of rolling_restart: every node restarted once, the master last.
type rollingRun struct {
	nodes []*rollingNode

	mu         sync.Mutex
	since      time.Time // the last ack through any node
	maxGap     time.Duration
	phase      string // what the bench does now: "steady", "stop node1", "start node1"
	sincePhase string // phase at since
	gapPhase   string // phase at the start of the longest gap
	acked      map[string]string
	errSeen    map[string]int // failed writes by api code (or "transport"), for the log
}

// rollingRestart runs the two runs of rolling_restart: the master restarted at once, and
// the master left down for rollingMasterDown before it starts again. Each prints a line.
func (b *bencher) rollingRestart(ctx context.Context) error {
	for i, down := range []time.Duration{0, rollingMasterDown} {
		if err := b.rollingRun(ctx, i, down); err != nil {
			return err
		}
	}
	return nil
}

func (b *bencher) rollingRun(ctx context.Context, run int, masterDown time.Duration) error {
	members := b.c.members()
	leader, err := b.c.leader(ctx)
	if err != nil {
		return err
	}
	// Followers first, in member order, the master last.
	var order []*node
	for _, n := range members {
		if n != leader {
			order = append(order, n)
		}
	}
	order = append(order, leader)

	start := time.Now()
	r := &rollingRun{since: start, acked: map[string]string{}, errSeen: map[string]int{}, phase: "steady", sincePhase: "steady"}
	byNode := map[*node]*rollingNode{}
	for _, n := range members {
		rn := &rollingNode{n: n, since: start, upChanged: make(chan struct{})}
		r.nodes = append(r.nodes, rn)
		byNode[n] = rn
	}
	wctx, stopWriters := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { // also on an early return: no writer outlives the run
		stopWriters()
		wg.Wait()
	}()
	var seq atomic.Int64
	for _, rn := range r.nodes {
		for w := 0; w < rollingWritersPerNode; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r.writer(wctx, rn, fmt.Sprintf("bench/rolling/%d/%s-%d", run, rn.n.name, w), &seq, b.value)
			}()
		}
	}
	settle := func(d time.Duration) {
		select {
		case <-ctx.Done():
		case <-time.After(d):
		}
	}
	settle(time.Second)
	var restarts []string
	for _, n := range order {
		if ctx.Err() != nil {
			break
		}
		rn := byNode[n]
		rn.setDown(true)
		r.setPhase("stop " + n.name)
		t0 := time.Now()
		n.stop(15 * time.Second)
		stopped := time.Since(t0)
		r.setPhase("start " + n.name)
		if n == leader && masterDown > 0 {
			settle(masterDown)
		}
		if err := n.start(ctx); err != nil {
			return err
		}
		if err := b.c.waitActive(ctx, members, 60*time.Second); err != nil {
			return err
		}
		rn.setDown(false)
		r.setPhase("steady")
		restarts = append(restarts, fmt.Sprintf("%s:%s", n.name, ms(stopped)))
		logf("rolling_restart: %s stopped in %sms, back in state A after %sms", n.name, ms(stopped), ms(time.Since(t0)))
		settle(500 * time.Millisecond)
	}
	settle(500 * time.Millisecond)
	stopWriters()
	wg.Wait()
	elapsed := time.Since(start)

	lost, verifyErrs := b.verifyAcked(ctx, members, r.acked)
	acked, failDown, failUp, unknown := 0, 0, 0, 0
	var perAck, perDown, perUp, perGap []string
	for _, rn := range r.nodes {
		acked += rn.acked
		failDown += rn.failDown
		failUp += rn.failUp
		unknown += rn.unknown
		perAck = append(perAck, fmt.Sprintf("%s:%d", rn.n.name, rn.acked))
		perDown = append(perDown, fmt.Sprintf("%s:%d", rn.n.name, rn.failDown))
		perUp = append(perUp, fmt.Sprintf("%s:%d", rn.n.name, rn.failUp))
		perGap = append(perGap, fmt.Sprintf("%s:%s", rn.n.name, ms(rn.maxGap)))
	}
	var codes []string
	for c, k := range r.errSeen {
		codes = append(codes, fmt.Sprintf("%s:%d", c, k))
	}
	if len(codes) > 0 {
		logf("rolling_restart: failed writes by cause: %s", strings.Join(codes, ","))
	}
	fields := []kv{
		{"master_down_ms", masterDown.Milliseconds()}, {"writers", rollingWritersPerNode * len(members)},
		{"order", strings.Join(restarts, ",")},
		{"acked", acked}, {"ops_per_s", rate(acked, elapsed)}, {"lost_acked", lost},
		{"failed_via_restarted", failDown}, {"failed_via_up", failUp}, {"unknown_outcome", unknown},
		{"max_gap_ms", ms(r.maxGap)}, {"max_gap_during", strings.ReplaceAll(r.gapPhase, " ", ":")},
		{"acked_per_node", strings.Join(perAck, ",")},
		{"failed_via_restarted_per_node", strings.Join(perDown, ",")},
		{"failed_via_up_per_node", strings.Join(perUp, ",")},
		{"max_gap_per_node_ms", strings.Join(perGap, ",")},
		{"errors", verifyErrs},
	}
	fmt.Println(line("rolling_restart", fields...))
	return nil
}

// writer writes a new key under prefix until ctx ends, through rn's node while it is up,
// and records each acknowledged key and value.
func (r *rollingRun) writer(ctx context.Context, rn *rollingNode, prefix string, seq *atomic.Int64, value []byte) {
	cl := client(rn.n)
	for ctx.Err() == nil {
		if ch := rn.waitUp(); ch != nil {
			select {
			case <-ctx.Done():
				return
			case <-ch:
			}
			cl = client(rn.n) // a fresh connection to the restarted daemon
			continue
		}
		s := seq.Add(1)
		key := fmt.Sprintf("%s/%d", prefix, s)
		val := fmt.Sprintf("%d:%s", s, value)
		octx, cancel := context.WithTimeout(ctx, opTimeout)
		_, err := cl.ConfigSet(octx, key, []byte(val), apiclient.WriteOptions{})
		cancel()
		now := time.Now()
		if err != nil && ctx.Err() != nil {
			return // the run ended: not a failure of the cluster
		}
		rn.mu.Lock()
		if err != nil {
			if rn.down {
				rn.failDown++
			} else {
				rn.failUp++
			}
			var ae *apiclient.APIError
			code := "transport"
			if errors.As(err, &ae) {
				code = ae.Code
			}
			if code == api.CodeUnknownOutcome {
				rn.unknown++
			}
			rn.mu.Unlock()
			r.mu.Lock()
			r.errSeen[code]++
			r.mu.Unlock()
			select {
			case <-ctx.Done():
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		rn.acked++
		if !rn.down {
			rn.maxGap = max(rn.maxGap, now.Sub(rn.since))
			rn.since = now
		}
		rn.mu.Unlock()
		r.mu.Lock()
		if gap := now.Sub(r.since); gap > r.maxGap {
			r.maxGap, r.gapPhase = gap, r.sincePhase
		}
		r.since, r.sincePhase = now, r.phase
		r.acked[key] = val
		r.mu.Unlock()
	}
}

// setPhase records what the bench does from now on, for the attribution of the gaps.
func (r *rollingRun) setPhase(p string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.phase = p
}

// setDown marks the node as being restarted (its writers wait) or back up.
func (rn *rollingNode) setDown(down bool) {
	rn.mu.Lock()
	defer rn.mu.Unlock()
	rn.down = down
	if !down {
		rn.since = time.Now()
		close(rn.upChanged)
		rn.upChanged = make(chan struct{})
	}
}

// waitUp returns nil while the node is up, else a channel closed when it is up again.
func (rn *rollingNode) waitUp() <-chan struct{} {
	rn.mu.Lock()
	defer rn.mu.Unlock()
	if !rn.down {
		return nil
	}
	return rn.upChanged
}

// verifyAcked reads every acknowledged key with a linearizable read, spread over the
// nodes, and returns how many are missing or differ, and how many reads failed.
func (b *bencher) verifyAcked(ctx context.Context, members []*node, acked map[string]string) (lost, errs int) {
	keys := make(chan string, 256)
	var mu sync.Mutex
	var wg sync.WaitGroup
	const readers = 8
	for i := 0; i < readers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := client(members[i%len(members)])
			for k := range keys {
				var got *apiclient.ConfigValue
				var err error
				for try := 0; try < 3; try++ { // a read is idempotent: retry a passing failure
					octx, cancel := context.WithTimeout(ctx, opTimeout)
					got, err = cl.ConfigGet(octx, k, apiclient.ReadOptions{})
					cancel()
					var ae *apiclient.APIError
					if err == nil || (errors.As(err, &ae) && ae.Code == api.CodeNotFound) {
						break
					}
				}
				mu.Lock()
				var ae *apiclient.APIError
				switch {
				case err == nil && string(got.Value) == acked[k]:
				case err == nil, errors.As(err, &ae) && ae.Code == api.CodeNotFound:
					lost++
					if lost <= 3 {
						logf("rolling_restart: acknowledged key %s lost (%v)", k, err)
					}
				default:
					errs++
				}
				mu.Unlock()
			}
		}()
	}
	for k := range acked {
		if ctx.Err() != nil {
			break
		}
		keys <- k
	}
	close(keys)
	wg.Wait()
	return lost, errs
}
