package daemon

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/cluster"
	"github.com/pmgcm/pmgcm/fsm"
	"github.com/pmgcm/pmgcm/mailstore"
	"github.com/pmgcm/pmgcm/raftnode"
)

// Timing of `pmgcm check`.
const (
	// checkStateWait is how long a node may take to reach the compared index.
	checkStateWait = 5 * time.Second
	// checkMailTimeout bounds one node's mail digest (a verified check of a large
	// quarantine reads every body).
	checkMailTimeout = 2 * time.Hour
	// checkRecheckAfter is the pause before differences are looked at again: mail
	// replication is asynchronous, and what it fixes meanwhile was in flight, not a fault.
	checkRecheckAfter = 2 * time.Second
	// checkRetentionMargin: messages this close to the retention cut-off are left out,
	// since each node purges on its own timer.
	checkRetentionMargin = time.Hour
	// checkDetailBuckets bounds the buckets compared message by message: each costs every
	// node a scan of its index, and the report would list every message of a node that
	// lost them all. The rest are counted.
	checkDetailBuckets = 16
)

// checker runs the consistency check (pmgcm check): this node's state and mail digests
// for the other members, and the comparison of every member's against the master's.
type checker struct {
	// stat is this node's view of the cluster (status.go).
	stat       *statusReporter
	fsm        *fsm.FSM
	logger     hclog.Logger
	rpcTimeout time.Duration
	intake     *intakePolicy
	members    *memberView
	writes     *writer
	peer       func() *cluster.Client
	mail       func() *mailSystem
	// host is what the check needs of the rest of the daemon.
	host checkHost
}

// checkHost is what the consistency check needs of the daemon.
type checkHost interface {
	self() nodeFile
	rn() *raftnode.Node
	checkServing() error
}

func newChecker(d *Daemon) *checker {
	return &checker{
		fsm: d.fsm, logger: d.logger, rpcTimeout: d.cfg.RPCTimeout, intake: d.intake, members: d.members, writes: d.writes,
		peer: func() *cluster.Client { return d.peer }, mail: d.mailSys, stat: d.stat, host: d,
	}
}

// CheckState implements cluster.OpsHandler. index 0 asks for the state as it is now. A
// node that has passed index, or does not reach it before ctx ends, answers without a
// digest (SHA256 empty) and with its applied index, so that the caller can tell which.
func (h rpcHandler) CheckState(ctx context.Context, index uint64) (cluster.StateCheck, error) {
	return h.d.checker.checkStateLocal(ctx, index)
}

func (c *checker) checkStateLocal(ctx context.Context, index uint64) (cluster.StateCheck, error) {
	if err := c.host.checkServing(); err != nil {
		return cluster.StateCheck{}, err
	}
	if index == 0 {
		index = c.fsm.AppliedIndex()
	}
	sh, err := c.fsm.HashAt(ctx, index)
	out := cluster.StateCheck{StateHash: sh, Applied: c.fsm.AppliedIndex()}
	if err != nil && (errors.Is(err, fsm.ErrIndexPassed) || ctx.Err() != nil) {
		out.Index = index
		return out, nil
	}
	return out, err
}

// CheckMail implements cluster.OpsHandler.
func (h rpcHandler) CheckMail(ctx context.Context, req cluster.MailCheckRequest) (cluster.MailCheck, error) {
	if err := h.d.whenMailOpen(ctx); err != nil {
		return cluster.MailCheck{}, err
	}
	return h.d.checker.checkMailLocal(ctx, req, nil)
}

func (c *checker) checkMailLocal(ctx context.Context, req cluster.MailCheckRequest, progress func(int)) (cluster.MailCheck, error) {
	if err := c.host.checkServing(); err != nil {
		return cluster.MailCheck{}, err
	}
	var out cluster.MailCheck
	opts := mailstore.CheckOptions{Since: req.Since, Verify: req.Verify, Bucket: req.Bucket, Progress: progress}
	if req.Bucket >= 0 {
		opts.Entries = func(_ int, e mailstore.CheckEntry) { out.Entries = append(out.Entries, e) }
	}
	dg, err := c.mail().store.Check(ctx, opts)
	out.Digest = dg
	return out, err
}

// checkNode is one member as the check sees it.
type checkNode struct {
	m     fsm.Member
	local bool
	row   *api.CheckNode
	state cluster.StateCheck
	mail  cluster.MailCheck
	err   error // why it could not be compared
}

// check compares every active member's configuration at one applied index and its mail,
// reporting what differs where (see api.CheckReport).
func (c *checker) check(ctx context.Context, verify bool, progress func(api.CheckProgress)) (*api.CheckReport, error) {
	if err := c.host.checkServing(); err != nil {
		return nil, err
	}
	start := time.Now()
	me := c.host.self()
	members := c.members.active()
	if c.fsm.Cluster() == nil {
		members = []fsm.Member{{CID: me.CID, Name: me.Name, IP: me.IP, Port: me.Port}}
	}
	rep := &api.CheckReport{Verified: verify, Nodes: []api.CheckNode{}, Differences: []api.CheckDifference{}}
	nodes := make([]*checkNode, len(members))
	for i, m := range members {
		rep.Nodes = append(rep.Nodes, api.CheckNode{CID: m.CID, Name: m.Name, IP: m.IP})
		nodes[i] = &checkNode{m: m, local: m.CID == me.CID}
	}
	for i := range nodes {
		nodes[i].row = &rep.Nodes[i]
	}
	if err := c.checkConfig(ctx, nodes, rep, progress); err != nil {
		return nil, err
	}
	if err := c.checkMail(ctx, nodes, rep, verify, progress); err != nil {
		return nil, err
	}
	for _, n := range nodes {
		if n.err != nil {
			n.row.Error = n.err.Error()
			rep.Differences = append(rep.Differences, api.CheckDifference{What: "node", CID: n.m.CID, Node: n.m.Name,
				Detail: n.err.Error(), Repair: nodeRepair(n)})
		}
	}
	rep.Consistent = len(rep.Differences) == 0
	rep.DurationSeconds = time.Since(start).Seconds()
	c.logger.Info("consistency check", "consistent", rep.Consistent, "index", rep.Index,
		"differences", len(rep.Differences), "verified", verify, "duration", time.Since(start).Round(time.Millisecond))
	return rep, nil
}

func nodeRepair(n *checkNode) string {
	if cluster.NotSupported(n.err) {
		return fmt.Sprintf("upgrade pmgcm on %s: its version has no consistency check", n.m.Name)
	}
	return fmt.Sprintf("bring %s (%s) back up (pmgcm status shows why it is down), then run pmgcm check again", n.m.Name, n.m.IP)
}

// checkConfig compares the state machines at the master's applied index. A node that
// has passed the index (a write came in meanwhile) makes the round start over at a newer
// one; a node that does not reach it (the master's index is that of a restored snapshot,
// which a node replaying the log never applies as such) is given a real index: a command
// that changes nothing (checkMark).
func (c *checker) checkConfig(ctx context.Context, nodes []*checkNode, rep *api.CheckReport, progress func(api.CheckProgress)) error {
	marked := false
	for round := 0; ; round++ {
		progress(api.CheckProgress{Phase: "config", Nodes: len(nodes)})
		index, err := c.masterIndex(ctx)
		if err != nil {
			return err
		}
		var wg sync.WaitGroup
		for _, n := range nodes {
			n.err = nil
			wg.Add(1)
			go func() {
				defer wg.Done()
				n.state, n.err = c.stateOf(ctx, n, index)
			}()
		}
		wg.Wait()
		passed, behind := false, false
		for _, n := range nodes {
			if n.err == nil && n.state.SHA256 == "" {
				if n.state.Applied > index {
					passed = true
				} else {
					behind = true
				}
			}
		}
		if !passed && !behind {
			rep.Index = index
			break
		}
		if round >= 4 {
			for _, n := range nodes {
				if n.err == nil && n.state.SHA256 == "" {
					n.err = fmt.Errorf("its configuration could not be compared at one index with the master's (it is at %d, the master at %d): the configuration changes too fast, or the node is far behind",
						n.state.Applied, index)
				}
			}
			rep.Index = index
			break
		}
		if behind && !passed && !marked {
			if err := c.checkMark(ctx); err != nil {
				return err
			}
			marked = true
		}
	}
	counts := map[string]int{}
	var masterSum string
	_, leaderID := c.host.rn().Leader()
	for _, n := range nodes {
		if n.err == nil {
			n.row.ConfigSHA256, n.row.Entries = n.state.SHA256, n.state.Entries
			counts[n.state.SHA256]++
			if string(leaderID) == strconv.FormatUint(n.m.CID, 10) {
				masterSum = n.state.SHA256
			}
		}
	}
	ref := majority(counts, masterSum)
	master, _ := c.members.master()
	for _, n := range nodes {
		if n.err == nil && n.state.SHA256 != ref {
			rep.Differences = append(rep.Differences, api.CheckDifference{What: "config", CID: n.m.CID, Node: n.m.Name,
				Detail: fmt.Sprintf("its configuration at index %d hashes to %s, %d of %d nodes to %s", rep.Index,
					short(n.state.SHA256), counts[ref], len(nodes), short(ref)),
				Repair: fmt.Sprintf("rebuild it from the cluster: pmgcm delete %d (on another node), then on %s: pmgcm join %s",
					n.m.CID, n.m.Name, orUnknown(master.IP))})
		}
	}
	return nil
}

// majority returns the most common digest; a tie goes to the master's.
func majority(counts map[string]int, master string) string {
	best, n := master, counts[master]
	for s, c := range counts {
		if c > n || c == n && best != master && s < best {
			best, n = s, c
		}
	}
	return best
}

func short(sum string) string {
	if len(sum) > 12 {
		return sum[:12]
	}
	return sum
}

func orUnknown(s string) string {
	if s == "" {
		return "<master_ip>"
	}
	return s
}

// masterIndex returns the master's state-machine index (this node's own without a
// cluster).
func (c *checker) masterIndex(ctx context.Context) (uint64, error) {
	if c.fsm.Cluster() == nil || c.host.rn().IsLeader() {
		return c.fsm.AppliedIndex(), nil
	}
	addr, err := c.writes.leaderAddr()
	if err != nil {
		return 0, fmt.Errorf("%w: the consistency check compares every node with the master: %s", err, c.stat.quorumSummary())
	}
	sc, err := c.peer().CheckState(ctx, addr, 0, checkStateWait)
	if err != nil {
		if cluster.NotSupported(err) {
			return 0, fmt.Errorf("the master (%s) runs an older version without the consistency check: upgrade it first", addr)
		}
		return 0, err
	}
	return sc.Index, nil
}

// checkMarkKey is the key of the consistency check's mark: a conditional delete of it
// "only if absent" changes nothing whatever the store holds (it fails, not found or
// version conflict), yet every node applies it at one index.
const checkMarkKey = "pmgcm/check-mark"

// checkMark commits a command that changes nothing, so that every node applies one
// index the configurations can be compared at.
func (c *checker) checkMark(ctx context.Context) error {
	zero := uint64(0)
	_, err := c.writes.propose(ctx, fsm.ConfigDelete{Key: checkMarkKey, IfVersion: &zero})
	var vc *versionConflict
	switch {
	case err == nil, errors.Is(err, fsm.ErrNotFound), errors.Is(err, fsm.ErrVersionConflict), errors.As(err, &vc),
		cluster.Code(err) == api.CodeNotFound, cluster.Code(err) == api.CodeConflict:
		return nil
	}
	return fmt.Errorf("mark an index for the consistency check: %w", err)
}

func (c *checker) stateOf(ctx context.Context, n *checkNode, index uint64) (cluster.StateCheck, error) {
	if n.local {
		wctx, cancel := context.WithTimeout(ctx, checkStateWait)
		defer cancel()
		return c.checkStateLocal(wctx, index)
	}
	cctx, cancel := context.WithTimeout(ctx, checkStateWait+c.rpcTimeout)
	defer cancel()
	sc, err := c.peer().CheckState(cctx, memberAddr(n.m), index, checkStateWait)
	if cluster.NotSupported(err) {
		err = fmt.Errorf("%w: %s runs an older version without the consistency check: not available on it", err, n.m.Name)
	}
	return sc, err
}

// checkMail compares the nodes' mail digests, then the entries of each bucket whose
// digests differ, twice: what replication settled in between is not reported.
func (c *checker) checkMail(ctx context.Context, nodes []*checkNode, rep *api.CheckReport, verify bool, progress func(api.CheckProgress)) error {
	req := cluster.MailCheckRequest{Verify: verify, Bucket: -1}
	if v, ok := c.intake.setting(keyRetentionDays); ok {
		if days, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && days > 0 {
			req.Since = time.Now().Add(-time.Duration(days)*24*time.Hour + checkRetentionMargin)
			rep.Since = req.Since.UTC()
		}
	}
	total, _ := c.mail().store.Stats()
	var mu sync.Mutex
	p := api.CheckProgress{Phase: "mail", Total: total, Nodes: len(nodes)}
	report := func(change func()) {
		mu.Lock()
		change()
		cur := p
		mu.Unlock()
		progress(cur)
	}
	var wg sync.WaitGroup
	for _, n := range nodes {
		if n.err != nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			n.mail, n.err = c.mailOf(ctx, n, req, func(c int) { report(func() { p.Checked = int64(c) }) })
			report(func() { p.NodesDone++ })
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	var live []*checkNode
	for _, n := range nodes {
		if n.err == nil {
			n.row.MailSHA256, n.row.Messages = n.mail.Digest.SHA256, n.mail.Digest.Messages
			live = append(live, n)
		}
	}
	buckets := differingBuckets(live)
	if len(buckets) == 0 {
		return nil
	}
	if len(buckets) > checkDetailBuckets {
		rep.Differences = append(rep.Differences, api.CheckDifference{What: "mail",
			Detail: fmt.Sprintf("%d of %d message buckets differ between the nodes; the messages of the first %d are listed",
				len(buckets), mailstore.CheckBuckets, checkDetailBuckets),
			Repair: "repair the differences listed, then run pmgcm check again"})
		buckets = buckets[:checkDetailBuckets]
	}
	first, err := c.bucketEntries(ctx, live, req, buckets)
	if err != nil {
		return err
	}
	progress(api.CheckProgress{Phase: "recheck", Nodes: len(live)})
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(checkRecheckAfter):
	}
	second, err := c.bucketEntries(ctx, live, req, buckets)
	if err != nil {
		return err
	}
	rep.Differences = append(rep.Differences, mailDifferences(live, first, second)...)
	return nil
}

func (c *checker) mailOf(ctx context.Context, n *checkNode, req cluster.MailCheckRequest, progress func(int)) (cluster.MailCheck, error) {
	cctx, cancel := context.WithTimeout(ctx, checkMailTimeout)
	defer cancel()
	if n.local {
		return c.checkMailLocal(cctx, req, progress)
	}
	return c.peer().CheckMail(cctx, memberAddr(n.m), req)
}

// differingBuckets lists the buckets whose digests are not the same on every node.
func differingBuckets(nodes []*checkNode) []int {
	var out []int
	if len(nodes) < 2 {
		return nil
	}
	ref := nodes[0].mail.Digest
	for _, n := range nodes[1:] {
		if n.mail.Digest.SHA256 != ref.SHA256 {
			break
		}
		if n == nodes[len(nodes)-1] {
			return nil
		}
	}
	for b := 0; b < mailstore.CheckBuckets; b++ {
		for _, n := range nodes[1:] {
			if len(n.mail.Digest.Buckets) != mailstore.CheckBuckets || len(ref.Buckets) != mailstore.CheckBuckets ||
				n.mail.Digest.Buckets[b] != ref.Buckets[b] {
				out = append(out, b)
				break
			}
		}
	}
	return out
}

// nodeEntries is, per node (by CID), message ID -> entry.
type nodeEntries map[uint64]map[string]mailstore.CheckEntry

// bucketEntries fetches the entries of the given buckets from every node.
func (c *checker) bucketEntries(ctx context.Context, nodes []*checkNode, req cluster.MailCheckRequest, buckets []int) (nodeEntries, error) {
	out := nodeEntries{}
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	for _, n := range nodes {
		out[n.m.CID] = map[string]mailstore.CheckEntry{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, b := range buckets {
				r := req
				r.Bucket = b
				mc, err := c.mailOf(ctx, n, r, nil)
				mu.Lock()
				if err != nil {
					if firstErr == nil {
						firstErr = fmt.Errorf("list the messages of %s: %w", n.m.Name, err)
					}
					mu.Unlock()
					return
				}
				for _, e := range mc.Entries {
					out[n.m.CID][e.ID] = e
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return out, firstErr
}

// mailDifferences reports each message that differs between the nodes in both looks.
func mailDifferences(nodes []*checkNode, first, second nodeEntries) []api.CheckDifference {
	ids := map[string]bool{}
	for _, per := range []nodeEntries{first, second} {
		for _, m := range per {
			for id := range m {
				ids[id] = true
			}
		}
	}
	var out []api.CheckDifference
	for _, id := range sortedKeys(ids) {
		if agree(nodes, first, id) || agree(nodes, second, id) {
			continue
		}
		out = append(out, messageDifferences(nodes, second, id)...)
	}
	return out
}

// agree reports whether every node holds message id alike, with its body.
func agree(nodes []*checkNode, per nodeEntries, id string) bool {
	var ref *mailstore.CheckEntry
	for _, n := range nodes {
		e, ok := per[n.m.CID][id]
		if !ok || e.Body != mailstore.BodyOK {
			return false
		}
		if ref == nil {
			ref = &e
		} else if e != *ref {
			return false
		}
	}
	return true
}

// messageDifferences says, for each node, how its copy of message id differs.
func messageDifferences(nodes []*checkNode, per nodeEntries, id string) []api.CheckDifference {
	// The reference is the most common (sha256, state) among the nodes that hold it.
	counts := map[string]int{}
	states := map[string]bool{}
	for _, n := range nodes {
		if e, ok := per[n.m.CID][id]; ok {
			counts[e.SHA256+" "+e.State]++
			states[e.State] = true
		}
	}
	ref := majority(counts, "")
	refSHA, refState, _ := strings.Cut(ref, " ")
	var out []api.CheckDifference
	add := func(n *checkNode, detail, repair string) {
		out = append(out, api.CheckDifference{What: "mail", CID: n.m.CID, Node: n.m.Name, ID: id, Detail: detail, Repair: repair})
	}
	for _, n := range nodes {
		e, ok := per[n.m.CID][id]
		switch {
		case !ok:
			add(n, fmt.Sprintf("message %s is missing here (deleted or never received; %s on %d other nodes)", id, refState, counts[ref]),
				fmt.Sprintf("if it should be gone: pmgcm quarantine delete %s; else restart pmgclusterd on %s, whose replication then asks its peers again", id, n.m.Name))
		case e.SHA256 != refSHA:
			add(n, fmt.Sprintf("message %s has metadata sha256 %s here, %s on the others", id, short(e.SHA256), short(refSHA)),
				fmt.Sprintf("rebuild the node from the cluster: pmgcm delete %d (on another node), then on %s: pmgcm join <master_ip>", n.m.CID, n.m.Name))
		case len(states) > 1 && e.State != maxMailState(states):
			target := maxMailState(states)
			add(n, fmt.Sprintf("message %s is %s here, %s elsewhere", id, e.State, target),
				fmt.Sprintf("pmgcm quarantine %s %s (on any node) sets it everywhere", stateVerb(target), id))
		case e.Body == mailstore.BodyMissing:
			add(n, fmt.Sprintf("the body of message %s has not reached this node", id),
				fmt.Sprintf("replication fetches it from a peer: wait for state A in pmgcm status; if it stays, restart pmgclusterd on %s", n.m.Name))
		case e.Body != mailstore.BodyOK:
			add(n, fmt.Sprintf("the body of message %s on disk is damaged (%s)", id, e.Body),
				fmt.Sprintf("on %s: pmgcm quarantine show %s >/dev/null (moves the damaged copy aside and fetches it again from a peer)", n.m.Name, id))
		}
	}
	return out
}

func maxMailState(states map[string]bool) string {
	for _, s := range []string{mailstore.StateDeleted, mailstore.StateReleased, mailstore.StateQuarantined} {
		if states[s] {
			return s
		}
	}
	return ""
}

func stateVerb(state string) string {
	switch state {
	case mailstore.StateDeleted:
		return "delete"
	case mailstore.StateReleased:
		return "release"
	}
	return "show"
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
