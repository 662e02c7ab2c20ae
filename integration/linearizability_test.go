package integration

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/pmgcm/pmgcm/api"
	apiclient "github.com/pmgcm/pmgcm/api/client"
	"github.com/pmgcm/pmgcm/internal/testutil"
)

// The linearizability check of the configuration store (issue 5): concurrent clients
// on different nodes do get / set / CAS / delete on a few keys while a fault loop kills,
// pauses and partitions nodes, one at a time; the history is checked against the model
// of lincheck_test.go with porcupine.
//
// Settings, from the environment:
//   - PMGCM_LIN_DURATION: how long the clients and faults run (default 8s; `make drill`
//     runs 60s).
//   - PMGCM_LIN_SEED: the seed of the fault loop and of the clients' choices (default:
//     the clock). The seed is logged; the timing of a run is not reproducible, but the
//     sequence of faults and operations is.
//   - PMGCM_LIN_OUT: where a failed run writes its visualization, history and node logs
//     (default: a new directory under the system's temp dir, kept after the test).

const (
	linClients   = 4
	linOpTimeout = 7 * time.Second // above the daemon's own 5s, so it answers first
	linCheckTime = 60 * time.Second
	linMinOps    = 50
)

var linKeys = []string{"lin/a", "lin/b", "lin/c"}

// linRecord is one operation of the history as the clients recorded it.
type linRecord struct {
	proc      int
	node      string // the node the client sent the op to
	in        linInput
	out       linOutput
	call, ret int64
}

// linHistory collects the records of every client.
type linHistory struct {
	mu      sync.Mutex
	recs    []linRecord
	dropped int // not sent (node down) or failed reads: no effect, left out
	bad     []string
}

func (h *linHistory) add(r linRecord) {
	h.mu.Lock()
	h.recs = append(h.recs, r)
	h.mu.Unlock()
}

func (h *linHistory) drop() {
	h.mu.Lock()
	h.dropped++
	h.mu.Unlock()
}

func (h *linHistory) badAnswer(format string, args ...any) {
	h.mu.Lock()
	h.bad = append(h.bad, fmt.Sprintf(format, args...))
	h.mu.Unlock()
}

// operations returns the porcupine history: unknown ops return after every other op.
func (h *linHistory) operations() []porcupine.Operation {
	h.mu.Lock()
	defer h.mu.Unlock()
	var last int64
	for _, r := range h.recs {
		last = max(last, r.ret, r.call)
	}
	ops := make([]porcupine.Operation, 0, len(h.recs))
	for _, r := range h.recs {
		ret := r.ret
		if r.out.Result == linUnknown {
			ret = last + 1
		}
		ops = append(ops, porcupine.Operation{ClientId: r.proc, Input: r.in, Call: r.call, Output: r.out, Return: ret, Metadata: r.node})
	}
	return ops
}

// linEnvDuration reads a duration from the environment.
func linEnvDuration(t *testing.T, name string, def time.Duration) time.Duration {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		t.Fatalf("%s=%q: want a positive duration such as 60s", name, s)
	}
	return d
}

// linSeed reads PMGCM_LIN_SEED, or takes the clock.
func linSeed(t *testing.T) uint64 {
	t.Helper()
	s := os.Getenv("PMGCM_LIN_SEED")
	if s == "" {
		return uint64(time.Now().UnixNano())
	}
	seed, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		t.Fatalf("PMGCM_LIN_SEED=%q: want an unsigned integer", s)
	}
	return seed
}

// TestLinearizable runs concurrent clients against a 3-node cluster under kill -9,
// SIGSTOP and partitions, and checks that the history is linearizable.
func TestLinearizable(t *testing.T) {
	t.Parallel()
	linCheck(t, newCluster(t, 3))
}

// TestLinearizableNetfault is the same check with the cluster in a network namespace:
// the partitions are nftables drops between the nodes' addresses (the kernel's, not the
// transport's fault injection), and a fourth fault puts 10% loss on every link.
func TestLinearizableNetfault(t *testing.T) {
	t.Parallel()
	linCheck(t, newNetnsCluster(t, 3))
}

// linCheck forms c, runs the clients against the fault loop and checks the history.
func linCheck(t *testing.T, c *Cluster) {
	duration := linEnvDuration(t, "PMGCM_LIN_DURATION", 8*time.Second)
	seed := linSeed(t)
	t.Logf("seed %d (rerun with PMGCM_LIN_SEED=%d), duration %s", seed, seed, duration)

	for _, n := range c.Nodes {
		n.ExtraArgs = []string{"--fault-injection"}
	}
	c.form()

	h := &linHistory{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	nextProc := atomic.Int64{}
	nextProc.Store(linClients)
	start := time.Now()
	for i := 0; i < linClients; i++ {
		w := &linWorker{
			proc: i, rng: rand.New(rand.NewPCG(seed, uint64(i+1))), h: h, nextProc: &nextProc,
			seen: map[string]uint64{},
		}
		for _, n := range c.Nodes {
			w.clients = append(w.clients, apiclient.New(n.Socket))
			w.names = append(w.names, n.Name)
		}
		w.node = w.rng.IntN(len(w.clients))
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.run(stop)
		}()
	}

	faults := linFaultLoop(t, c, rand.New(rand.NewPCG(seed, 0)), start, duration)
	close(stop)
	wg.Wait()
	elapsed := time.Since(start)

	ops := h.operations()
	counts := map[linResult]int{}
	kinds := map[linOpKind]int{}
	for _, op := range ops {
		counts[op.Output.(linOutput).Result]++
		kinds[op.Input.(linInput).Kind]++
	}
	completed := len(ops) - counts[linUnknown]
	t.Logf("%d faults; %d ops in %s: %d completed (ok %d, absent %d, conflict %d), %d unknown, %d left out (not sent or failed reads); get %d, set %d, cas %d, del %d",
		faults, len(ops), elapsed.Round(time.Millisecond), completed, counts[linOK], counts[linAbsent], counts[linConflict],
		counts[linUnknown], h.dropped, kinds[linGet], kinds[linSet], kinds[linCAS], kinds[linDelete])
	for _, b := range h.bad {
		t.Errorf("unexpected answer: %s", b)
	}
	if completed <= linMinOps {
		t.Errorf("only %d operations completed, want more than %d: the check would be vacuous", completed, linMinOps)
	}

	checkStart := time.Now()
	res, info := porcupine.CheckOperationsVerbose(linModel(), ops, linCheckTime)
	t.Logf("porcupine: %s in %s", res, time.Since(checkStart).Round(time.Millisecond))
	if res == porcupine.Ok {
		return
	}
	dir := linOutDir(t)
	vis := filepath.Join(dir, "history.html")
	if err := porcupine.VisualizePath(linModel(), info, vis); err != nil {
		t.Logf("writing the visualization: %v", err)
	}
	linWriteHistory(t, filepath.Join(dir, "history.txt"), ops, start)
	for _, n := range c.Nodes {
		if b, err := os.ReadFile(n.LogPath); err == nil {
			_ = os.WriteFile(filepath.Join(dir, n.Name+".log"), b, 0o644)
		}
	}
	if res == porcupine.Illegal {
		diag := linDiagnose(info, ops, start)
		_ = os.WriteFile(filepath.Join(dir, "diagnosis.txt"), []byte(diag), 0o644)
		t.Logf("diagnosis:\n%s", diag)
		t.Fatalf("history is NOT linearizable (seed %d); visualization: %s (history.txt and node logs beside it)", seed, vis)
	}
	t.Fatalf("porcupine could not decide within %s (seed %d); visualization: %s", linCheckTime, seed, vis)
}

// linOutDir returns the directory for a failed run's files, kept after the test.
func linOutDir(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("PMGCM_LIN_OUT"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		d, err := os.MkdirTemp(d, "lin-")
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	d, err := os.MkdirTemp("", "pmgcm-lin-")
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// linWriteHistory writes the history as text, one op per line in call order, with times
// in milliseconds since start (unknown ops have no return).
func linWriteHistory(t *testing.T, path string, ops []porcupine.Operation, start time.Time) {
	t.Helper()
	sorted := append([]porcupine.Operation(nil), ops...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Call < sorted[j].Call })
	describe := linModel().DescribeOperation
	ms := func(ns int64) string { return fmt.Sprintf("%.1f", float64(ns-start.UnixNano())/1e6) }
	var b strings.Builder
	for _, op := range sorted {
		ret := ms(op.Return)
		if op.Output.(linOutput).Result == linUnknown {
			ret = "?"
		}
		fmt.Fprintf(&b, "client %-3d %v [%s, %s] %s\n", op.ClientId, op.Metadata, ms(op.Call), ret, describe(op.Input, op.Output))
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Logf("writing the history: %v", err)
	}
}

// linWorker is one client: it sends operations to one node, and picks another when that
// one stops answering.
type linWorker struct {
	proc     int // porcupine ClientId; a new one after each unknown outcome
	nextProc *atomic.Int64
	rng      *rand.Rand
	h        *linHistory
	clients  []*apiclient.Client
	names    []string
	node     int
	seen     map[string]uint64 // the last version seen per key, for CAS
	seq      int
}

func (w *linWorker) run(stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		default:
		}
		w.once()
	}
}

// once does one random operation and records it.
func (w *linWorker) once() {
	key := linKeys[w.rng.IntN(len(linKeys))]
	in := linInput{Key: key}
	switch p := w.rng.IntN(100); {
	case p < 40:
		in.Kind = linGet
	case p < 65:
		in.Kind = linSet
	case p < 90:
		in.Kind = linCAS
		in.IfVersion = w.seen[key]
	default:
		in.Kind = linDelete
	}
	if in.Kind == linSet || in.Kind == linCAS {
		w.seq++
		in.Value = fmt.Sprintf("w%d-%d", w.proc, w.seq)
	}
	client, node := w.clients[w.node], w.names[w.node]
	ctx, cancel := context.WithTimeout(context.Background(), linOpTimeout)
	defer cancel()
	call := time.Now().UnixNano()
	var out linOutput
	var err error
	switch in.Kind {
	case linGet:
		var v *apiclient.ConfigValue
		if v, err = client.ConfigGet(ctx, key, apiclient.ReadOptions{}); err == nil {
			out = linOutput{Result: linOK, Value: string(v.Value), Version: v.Version}
		}
	case linSet, linCAS:
		opts := apiclient.WriteOptions{}
		if in.Kind == linCAS {
			x := in.IfVersion
			opts.IfVersion = &x
		}
		var r *api.WriteResponse
		if r, err = client.ConfigSet(ctx, key, []byte(in.Value), opts); err == nil {
			out = linOutput{Result: linOK, Version: r.Version}
		}
	case linDelete:
		var r *api.WriteResponse
		if r, err = client.ConfigDelete(ctx, key, apiclient.WriteOptions{}); err == nil {
			out = linOutput{Result: linOK, Version: r.Version}
		}
	}
	ret := time.Now().UnixNano()

	if err != nil {
		var ae *apiclient.APIError
		isAPI := errors.As(err, &ae)
		switch {
		case errors.Is(err, apiclient.ErrUnreachable):
			// Not connected: nothing was sent.
			w.h.drop()
			w.repick()
			return
		case isAPI && ae.Code == api.CodeConflict && in.Kind == linCAS:
			out = linOutput{Result: linConflict, Version: ae.Version}
		case isAPI && ae.Code == api.CodeNotFound && in.Kind != linSet && in.Kind != linCAS:
			out = linOutput{Result: linAbsent}
		case isAPI && (ae.Code == api.CodeBadRequest || ae.Code == api.CodeTooLarge || ae.Code == api.CodeConflict || ae.Code == api.CodeNotFound):
			w.h.badAnswer("%s %s: %d %s: %v", in.Kind, key, ae.Status, ae.Code, err)
			w.h.drop()
			return
		case in.Kind == linGet:
			// A failed read has no effect: leave it out.
			w.h.drop()
			w.repick()
			return
		default:
			// Timeout, reset, no quorum, a node killed mid-call: the write may or may
			// not have taken effect, now or later.
			out = linOutput{Result: linUnknown}
			w.repick()
		}
	}

	switch out.Result {
	case linOK, linConflict:
		w.seen[key] = out.Version
	case linAbsent:
		w.seen[key] = 0
	}
	if out.Result == linOK && in.Kind == linDelete {
		w.seen[key] = 0
	}
	w.h.add(linRecord{proc: w.proc, node: node, in: in, out: out, call: call, ret: ret})
	if out.Result == linUnknown {
		// Like a crashed Jepsen process: the op stays open to the end of the history,
		// so this client goes on under a new id.
		w.proc = int(w.nextProc.Add(1) - 1)
	}
}

// repick binds the worker to a random node.
func (w *linWorker) repick() { w.node = w.rng.IntN(len(w.clients)) }

// linFaultLoop injects faults, one node at a time, until duration has passed since start,
// and returns how many it injected. It waits for each faulty node to answer again
// before the next fault, so a quorum always remains.
func linFaultLoop(t *testing.T, c *Cluster, rng *rand.Rand, start time.Time, duration time.Duration) int {
	t.Helper()
	hold := func(minMs, maxMs int) time.Duration {
		return time.Duration(minMs+rng.IntN(maxMs-minMs+1)) * time.Millisecond
	}
	at := func() string { return time.Since(start).Round(time.Millisecond).String() }
	faults := 0
	for time.Since(start) < duration {
		// Let the clients work on a healthy cluster for a moment between faults.
		linWait(hold(200, 800))
		if time.Since(start) >= duration {
			break
		}
		victim := c.Nodes[rng.IntN(len(c.Nodes))]
		var others []*Node
		for _, n := range c.Nodes {
			if n != victim {
				others = append(others, n)
			}
		}
		faults++
		kinds := 3
		if c.NS != nil {
			kinds = 4 // packet loss too
		}
		switch rng.IntN(kinds) {
		case 0:
			d := hold(300, 1500)
			t.Logf("t+%s: kill -9 %s, restart after %s", at(), victim.Name, d)
			victim.Kill()
			linWait(d)
			victim.Start()
		case 1:
			d := hold(300, 1500)
			t.Logf("t+%s: SIGSTOP %s for %s", at(), victim.Name, d)
			victim.Pause()
			linWait(d)
			victim.Resume()
		case 2:
			d := hold(500, 2000)
			t.Logf("t+%s: partition %s from %s and %s for %s", at(), victim.Name, others[0].Name, others[1].Name, d)
			if c.NS != nil {
				c.NS.Isolate(victim.IP, ips(others...)...)
				linWait(d)
				c.NS.Heal()
				break
			}
			victim.Partition(others...)
			for _, o := range others {
				o.Partition(victim)
			}
			linWait(d)
			for _, n := range c.Nodes {
				n.Partition()
			}
		case 3:
			d := hold(1000, 3000)
			t.Logf("t+%s: 10%% loss on every link for %s", at(), d)
			c.NS.Loss(10)
			linWait(d)
			c.NS.Heal()
		}
		linWaitBack(t, victim)
		t.Logf("t+%s: %s is back", at(), victim.Name)
	}
	return faults
}

// linWait holds a fault (or the gap between two) for d: a duration of the drill, not a
// wait for a condition.
func linWait(d time.Duration) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	<-timer.C
}

// linWaitBack waits until n's control socket answers, then (best effort, a few seconds)
// until n sees itself active with a master, so that the next fault does not hit a
// cluster whose last victim is still catching up.
func linWaitBack(t *testing.T, n *Node) {
	t.Helper()
	testutil.Poll(t, n.Name+" answers on its socket", 30*time.Second, func() error {
		_, err := n.Status()
		return err
	})
	err := testutil.Wait(context.Background(), n.Name+" active with a master", 5*time.Second, func() error {
		st, err := n.Status()
		if err != nil {
			return err
		}
		if !linSelfActive(st) {
			return errors.New("not yet")
		}
		return nil
	})
	if err != nil {
		t.Logf("%v; going on", err)
	}
}

// linSelfActive reports whether st shows the local node in state A and some master.
func linSelfActive(st api.Status) bool {
	self, master := false, false
	for _, r := range st.Nodes {
		if r.Local && r.State == api.StateActive {
			self = true
		}
		if r.Role == api.RoleMaster {
			master = true
		}
	}
	return self && master
}

// linDiagnose explains an illegal history: for each key that could not be linearized, the
// end of the longest linearizable prefix porcupine found (with the model state after it)
// and the earliest-returning ops it could not add.
func linDiagnose(info porcupine.LinearizationInfo, ops []porcupine.Operation, start time.Time) string {
	model := linModel()
	parts := model.Partition(ops)
	partials := info.PartialLinearizationsOperations()
	ms := func(ns int64) string { return fmt.Sprintf("%.1fms", float64(ns-start.UnixNano())/1e6) }
	type opKey struct {
		proc int
		call int64
	}
	var b strings.Builder
	for p, part := range parts {
		if p >= len(partials) {
			break
		}
		var longest []porcupine.Operation
		for _, l := range partials[p] {
			if len(l) > len(longest) {
				longest = l
			}
		}
		if len(longest) == len(part) {
			continue
		}
		key := part[0].Input.(linInput).Key
		fmt.Fprintf(&b, "key %s: %d of %d ops linearized; the longest prefix ends with:\n", key, len(longest), len(part))
		state := model.Init()
		done := map[opKey]bool{}
		for i, op := range longest {
			_, state = model.Step(state, op.Input, op.Output)
			done[opKey{op.ClientId, op.Call}] = true
			if i >= len(longest)-10 {
				fmt.Fprintf(&b, "  client %d %v [%s, %s] %s => %s\n", op.ClientId, op.Metadata, ms(op.Call), ms(op.Return),
					model.DescribeOperation(op.Input, op.Output), model.DescribeState(state))
			}
		}
		var rest []porcupine.Operation
		for _, op := range part {
			if !done[opKey{op.ClientId, op.Call}] {
				rest = append(rest, op)
			}
		}
		sort.Slice(rest, func(i, j int) bool { return rest[i].Return < rest[j].Return })
		fmt.Fprintf(&b, "  not linearizable next (earliest returns first):\n")
		for i, op := range rest {
			if i == 6 {
				break
			}
			fmt.Fprintf(&b, "  client %d %v [%s, %s] %s\n", op.ClientId, op.Metadata, ms(op.Call), ms(op.Return), model.DescribeOperation(op.Input, op.Output))
		}
	}
	return b.String()
}
