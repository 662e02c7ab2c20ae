package mailrepl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/pmgcm/pmgcm/mailstore"
)

// Peer is another cluster member to replicate from.
type Peer struct {
	CID uint64
	// Addr is the member's cluster address, "ip:port".
	Addr string
}

// Config configures a Replicator. Start from DefaultConfig.
type Config struct {
	// Store is this node's mail store. Required.
	Store *mailstore.Store
	// Peers returns the current other members; it is called every
	// PeerRefresh, and loops start and stop as the answer changes. A peer
	// with this node's own CID is ignored. Required.
	Peers func() []Peer
	// Client makes the requests: one of NewHTTPClient, whose body fetches are
	// bounded by StallTimeout alone (the daemon's dials the transport's mail
	// channel). Required.
	Client *http.Client
	// Logger receives the replication logs (default: discard).
	Logger hclog.Logger
	// PollWait is how long a peer may hold an events request (long poll).
	// It must stay below the client's response-header timeout.
	PollWait time.Duration
	// PeerRefresh is how often Peers is read again.
	PeerRefresh time.Duration
	// MissingInterval is how often bodies still missing are looked for
	// on every peer; failures are retried sooner, from 1 s doubling.
	MissingInterval time.Duration
	// Batch is the most events asked for at once.
	Batch int
	// Fetchers is how many bodies are fetched at once (pool.go); FetchQueue how many
	// jobs may wait for a fetcher before the peer loops and the sweeper wait (a job is
	// one ID, or with Bulk up to 32 of one events answer).
	Fetchers, FetchQueue int
	// Bulk, when set and true, says every member serves PathBodies (feature level 2):
	// the bodies of one events answer are then fetched several to a request. Nil or
	// false: one request per body (PathBody), as every release serves.
	Bulk func() bool
	// StallTimeout cuts a body transfer that makes no progress this long.
	StallTimeout time.Duration
	// MinBackoff and MaxBackoff bound the wait after a failed request.
	MinBackoff, MaxBackoff time.Duration
}

// DefaultConfig returns a Config with the default timings; set Store, Peers
// and Client.
func DefaultConfig() Config {
	return Config{
		PollWait:        20 * time.Second,
		PeerRefresh:     time.Second,
		MissingInterval: 30 * time.Second,
		Batch:           DefaultPullBatch,
		Fetchers:        DefaultFetchers,
		FetchQueue:      DefaultFetchQueue,
		StallTimeout:    30 * time.Second,
		MinBackoff:      100 * time.Millisecond,
		MaxBackoff:      5 * time.Second,
	}
}

// validate checks the required fields and fills unset timings with defaults.
func (c *Config) validate() error {
	if c.Store == nil || c.Peers == nil || c.Client == nil {
		return fmt.Errorf("%w: Store, Peers and Client are required", ErrInvalidConfig)
	}
	d := DefaultConfig()
	for _, f := range []struct{ v, def *time.Duration }{
		{&c.PollWait, &d.PollWait}, {&c.PeerRefresh, &d.PeerRefresh},
		{&c.MissingInterval, &d.MissingInterval}, {&c.StallTimeout, &d.StallTimeout},
		{&c.MinBackoff, &d.MinBackoff}, {&c.MaxBackoff, &d.MaxBackoff},
	} {
		if *f.v <= 0 {
			*f.v = *f.def
		}
	}
	c.PollWait = min(c.PollWait, MaxWait)
	if c.Batch <= 0 {
		c.Batch = d.Batch
	}
	c.Batch = min(c.Batch, MaxBatch)
	if c.Fetchers <= 0 {
		c.Fetchers = d.Fetchers
	}
	if c.FetchQueue <= 0 {
		c.FetchQueue = d.FetchQueue
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	return nil
}

// Replicator pulls events and bodies from every peer into the store.
type Replicator struct {
	cfg    Config
	store  *mailstore.Store
	log    hclog.Logger
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	startOnce, closeOnce sync.Once
	kick                 chan struct{} // wakes the supervisor
	sweepNow             chan struct{} // wakes the missing-body sweeper
	sweepSoon            chan struct{} // asks the sweeper to retry within a second
	peersRead            chan struct{} // closed once the supervisor has read the peers the first time
	jobs                 chan fetchJob // bodies to fetch, for the fetch workers (pool.go)
	backlog              backlogCache  // the last BacklogState (backlog.go)

	mu    sync.Mutex
	loops map[Peer]*peerLoop
	heads map[Peer]mailstore.Cursors // of reachable peers, from their last answer
}

type peerLoop struct {
	// ctx ends when the loop is stopped (the peer left the members): the body
	// transfers from the peer use it too.
	ctx    context.Context
	cancel context.CancelFunc
	wake   chan struct{}
	// polled is set once the loop's first poll has ended, answered or failed: from then
	// on the peer's part of the backlog is known (zero for a peer that cannot be reached).
	polled bool
}

// New returns a Replicator; it does no I/O until Start.
func New(cfg Config) (*Replicator, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Replicator{
		cfg: cfg, store: cfg.Store, log: cfg.Logger.Named("mailrepl"),
		ctx: ctx, cancel: cancel,
		kick: make(chan struct{}, 1), sweepNow: make(chan struct{}, 1), sweepSoon: make(chan struct{}, 1),
		peersRead: make(chan struct{}),
		jobs:      make(chan fetchJob, cfg.FetchQueue),
		loops:     map[Peer]*peerLoop{}, heads: map[Peer]mailstore.Cursors{},
	}, nil
}

// Start starts the peer loops, the body fetchers and the missing-body sweeper. Later
// calls do nothing.
func (r *Replicator) Start() {
	r.startOnce.Do(func() {
		r.wg.Add(2 + r.cfg.Fetchers)
		go r.supervise()
		go r.sweeper()
		for i := 0; i < r.cfg.Fetchers; i++ {
			go r.fetchWorker()
		}
	})
}

// Close stops every loop and transfer and waits for them. It is idempotent.
func (r *Replicator) Close() error {
	r.closeOnce.Do(func() {
		r.cancel()
		r.wg.Wait()
	})
	return nil
}

// Kick makes the replicator re-read the peers, retry failed peers at once and
// look for missing bodies now (e.g. after a Verify found a corrupt one).
func (r *Replicator) Kick() {
	signal(r.kick)
	signal(r.sweepNow)
}

// Backlog returns what this node still lacks relative to the peers it can
// reach: the events they have beyond its cursors (counted as messages: most
// are) plus the bodies it misses; bytes are those bodies' sizes.
func (r *Replicator) Backlog() (messages, bytes int64) {
	own := r.store.FeedHeads()
	best := mailstore.Cursors{}
	r.mu.Lock()
	for _, h := range r.heads {
		for o, s := range h {
			best[o] = max(best[o], s)
		}
	}
	r.mu.Unlock()
	for o, s := range best {
		if s > own[o] {
			messages += int64(s - own[o])
		}
	}
	n, b, _ := r.store.MissingTotals()
	return messages + n, bytes + b
}

// BacklogKnown reports whether Backlog accounts for every current peer: each one has a
// running loop that has polled it at least once. Until then a node that has received
// nothing yet would show no backlog.
func (r *Replicator) BacklogKnown() bool {
	self := r.store.LocalCID()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.cfg.Peers() {
		if p.CID == self || p.Addr == "" {
			continue
		}
		if l, ok := r.loops[p]; !ok || !l.polled {
			return false
		}
	}
	return true
}

// PeerBacklog returns, for each peer this node can reach, how many events that peer has
// beyond this node's cursors: how far this node lags it. Unreachable peers are absent.
func (r *Replicator) PeerBacklog() map[Peer]int64 {
	own := r.store.FeedHeads()
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[Peer]int64, len(r.heads))
	for p, h := range r.heads {
		var n int64
		for o, s := range h {
			if s > own[o] {
				n += int64(s - own[o])
			}
		}
		out[p] = n
	}
	return out
}

// signal does a non-blocking send on a 1-buffered channel.
func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// sleep waits d, or until ctx ends (false) or wake fires.
func sleep(ctx context.Context, d time.Duration, wake <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-wake:
	case <-t.C:
	}
	return true
}

// supervise keeps one loop per current peer.
func (r *Replicator) supervise() {
	defer r.wg.Done()
	t := time.NewTicker(r.cfg.PeerRefresh)
	defer t.Stop()
	first := true
	for {
		r.refreshPeers()
		if first {
			close(r.peersRead)
			first = false
		}
		select {
		case <-r.ctx.Done():
			r.mu.Lock()
			for p, l := range r.loops {
				l.cancel()
				delete(r.loops, p)
			}
			r.mu.Unlock()
			return
		case <-t.C:
		case <-r.kick:
			r.mu.Lock()
			for _, l := range r.loops {
				signal(l.wake)
			}
			r.mu.Unlock()
		}
	}
}

func (r *Replicator) refreshPeers() {
	self := r.store.LocalCID()
	want := map[Peer]bool{}
	for _, p := range r.cfg.Peers() {
		if p.CID != self && p.Addr != "" {
			want[p] = true
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for p, l := range r.loops {
		if !want[p] {
			r.log.Info("stopping replication from peer", "cid", p.CID, "address", p.Addr)
			l.cancel()
			delete(r.loops, p)
			delete(r.heads, p)
		}
	}
	for p := range want {
		if _, ok := r.loops[p]; ok || r.ctx.Err() != nil {
			continue
		}
		ctx, cancel := context.WithCancel(r.ctx)
		l := &peerLoop{ctx: ctx, cancel: cancel, wake: make(chan struct{}, 1)}
		r.loops[p] = l
		r.log.Info("starting replication from peer", "cid", p.CID, "address", p.Addr)
		r.wg.Add(1)
		go r.runPeer(ctx, p, l)
	}
}

// peers returns the peers with a running loop, first and the origin's node
// ahead of the others.
func (r *Replicator) peers(first Peer, origin uint64) []Peer {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := []Peer{}
	if _, ok := r.loops[first]; ok {
		out = append(out, first)
	}
	for p := range r.loops {
		if p != first && p.CID == origin {
			out = append(out, p)
		}
	}
	for p := range r.loops {
		if p != first && p.CID != origin {
			out = append(out, p)
		}
	}
	return out
}

// originPeer returns the peer with a running loop whose CID is origin.
func (r *Replicator) originPeer(origin uint64) (Peer, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for p := range r.loops {
		if p.CID == origin {
			return p, true
		}
	}
	return Peer{}, false
}

// loopContext returns the context of p's running loop, which ends when p stops being a
// peer; false when p has no loop.
func (r *Replicator) loopContext(p Peer) (context.Context, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	l, ok := r.loops[p]
	if !ok {
		return nil, false
	}
	return l.ctx, true
}

func (r *Replicator) setHeads(p Peer, h mailstore.Cursors) {
	r.mu.Lock()
	defer r.mu.Unlock()
	l, ok := r.loops[p]
	if !ok {
		return
	}
	l.polled = true
	if h == nil {
		delete(r.heads, p)
	} else {
		r.heads[p] = h
	}
}

// runPeer long-polls one peer for events, applies them and hands the bodies they
// bring to the fetchers.
func (r *Replicator) runPeer(ctx context.Context, p Peer, l *peerLoop) {
	defer r.wg.Done()
	log := r.log.With("cid", p.CID, "address", p.Addr)
	var backoff, wait time.Duration // the first poll returns at once, to learn the heads
	batch := r.cfg.Batch
	for ctx.Err() == nil {
		resp, err := r.pollEvents(ctx, p, batch, wait)
		if errors.Is(err, errTooLarge) && batch > 1 {
			// Events with very large metadata: ask for fewer at once. A single event
			// always fits (its fields are bounded by SMTP intake).
			batch = max(1, batch/2)
			log.Debug("events answer too large, asking for fewer", "batch", batch, "error", err)
			wait = 0
			continue
		}
		if err == nil && batch < r.cfg.Batch {
			batch = min(r.cfg.Batch, 2*batch)
		}
		if err == nil && len(resp.Skip) > 0 {
			// The peer compacted events below its floors: they concern only messages past
			// retention, which this node purges by the same rule.
			if err = r.store.SkipTo(resp.Skip); err == nil {
				log.Info("skipped events compacted on the peer (messages past retention)", "floors", resp.Skip)
			}
		}
		if err == nil && len(resp.Events) > 0 {
			var need []string
			need, err = r.store.ApplyEvents(resp.Events)
			if err != nil {
				log.Warn("cannot apply events from peer", "error", err)
			}
			for _, ids := range r.jobsOf(need) {
				if !r.submit(ctx, fetchJob{ids: ids, first: p}) {
					return // the loop or the replicator ends; the sweeper finds the rest later
				}
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			r.setHeads(p, nil)
			backoff = min(max(2*backoff, r.cfg.MinBackoff), r.cfg.MaxBackoff)
			log.Debug("replication from peer failed", "error", err, "retry-in", backoff)
			sleep(ctx, backoff, l.wake)
			wait = 0
			continue
		}
		r.setHeads(p, resp.Heads)
		backoff, wait = 0, r.cfg.PollWait
	}
}

func (r *Replicator) pollEvents(ctx context.Context, p Peer, batch int, wait time.Duration) (*EventsResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, wait+15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, eventsURL(p.Addr, r.store.FeedHeads(), batch, wait), nil)
	if err != nil {
		return nil, err
	}
	resp, err := r.cfg.Client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("%w: events: %s: %s", ErrPeer, resp.Status, msg)
	}
	return DecodeEvents(resp.Body)
}

// sweeper looks for missing bodies at start, every MissingInterval, on Kick,
// and sooner (1 s doubling) while some could not be fetched. The first sweep waits
// until the supervisor has read the peers: before, no peer loop runs, so no body can
// be asked of its origin in bulk, and every job would fail or go alone.
func (r *Replicator) sweeper() {
	defer r.wg.Done()
	select {
	case <-r.peersRead:
	case <-r.ctx.Done():
		return
	}
	var retry time.Duration
	next := time.Now()
	for {
		t := time.NewTimer(time.Until(next))
		select {
		case <-r.ctx.Done():
			t.Stop()
			return
		case <-r.sweepSoon:
			t.Stop()
			if soon := time.Now().Add(time.Second); soon.Before(next) {
				next = soon
			}
			continue
		case <-r.sweepNow:
		case <-t.C:
		}
		t.Stop()
		if r.sweep() > 0 {
			retry = min(max(2*retry, time.Second), r.cfg.MissingInterval)
			next = time.Now().Add(retry)
		} else {
			retry, next = 0, time.Now().Add(r.cfg.MissingInterval)
		}
	}
}

// sweepJobs makes the fetch jobs of a sweep. With Config.Bulk the bodies whose origin
// (the node that took the message) is a peer are asked of it, up to bulkChunk to a
// request: it holds every body it took, and after a restore or a repair a node may lack
// thousands. The others, and all of them without Bulk, go one by one to whichever peer
// has them.
func (r *Replicator) sweepJobs(missing []mailstore.Meta) []fetchJob {
	var jobs []fetchJob
	alone := func(ids []string) {
		for _, id := range ids {
			jobs = append(jobs, fetchJob{ids: []string{id}})
		}
	}
	ids := make([]string, len(missing))
	for i, m := range missing {
		ids[i] = m.ID
	}
	if !r.bulk() {
		alone(ids)
		return jobs
	}
	groups, unparsed := groupByOrigin(ids)
	alone(unparsed)
	for _, g := range groups {
		p, ok := r.originPeer(g.origin)
		if !ok {
			alone(g.ids)
			continue
		}
		for _, chunk := range r.jobsOf(g.ids) {
			jobs = append(jobs, fetchJob{ids: chunk, first: p})
		}
	}
	return jobs
}

// sweep has the fetchers fetch every missing body they can and returns how many they
// could not.
func (r *Replicator) sweep() (failed int) {
	missing, err := r.store.Missing()
	if err != nil {
		return 1
	}
	results := make(chan error, len(missing)) // never blocks a fetcher
	sent := 0
	for _, j := range r.sweepJobs(missing) {
		ids := j.ids
		j.done = func(err error) {
			if err != nil {
				r.log.Debug("missing body not fetched", "ids", len(ids), "first", ids[0], "error", err)
			}
			results <- err
		}
		if !r.submit(r.ctx, j) {
			return failed
		}
		sent += len(ids)
	}
	for ; sent > 0; sent-- {
		select {
		case err := <-results:
			if err != nil {
				failed++
			}
		case <-r.ctx.Done():
			return failed
		}
	}
	return failed
}
