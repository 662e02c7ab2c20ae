package daemon

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/pmgcm/pmgcm/cluster"
	"github.com/pmgcm/pmgcm/fsm"
	voterpolicy "github.com/pmgcm/pmgcm/membership"
	"github.com/pmgcm/pmgcm/raftnode"
	"github.com/pmgcm/pmgcm/transport"
)

// Daemon is one running pmgclusterd.
//
// Lifecycle: New (validates, no I/O), Open (locks the data dir, starts Raft and the
// listeners), Close (idempotent; stops everything and releases the lock).
type Daemon struct {
	cfg     Config
	logger  hclog.Logger
	started time.Time

	dir *dataDir
	// node is this node's identity file as it is now, replaced whole (copy on write) so
	// that readers (the TLS authorizer among them) never wait; nodeMu serializes the
	// writers, which write node.json before they publish (see self and updateSelf).
	node   atomic.Pointer[nodeFile]
	nodeMu sync.Mutex
	key    crypto.Signer
	fsm    *fsm.FSM
	mux    *transport.Mux
	// raftp is this node's Raft node, set once by Open: join, sync and forced recovery
	// restart it in place (see rn).
	raftp atomic.Pointer[raftnode.Node]
	raft  *raftSlot
	// peers is the membership this node trusts at the handshake; trust keeps it (peers.go).
	peers atomic.Pointer[peerCache]
	trust *peerTrust
	// writes commits commands and reads linearizably (rpc.go).
	writes *writer
	// intake is the cached mail intake policy (see intake.go).
	intake *intakePolicy
	ctl    *http.Server
	// mail is the quarantine: store, replication and SMTP intake.
	mail *mailSystem
	// disk is the free space of the mail store's disk (diskfull.go).
	disk diskState
	// ops are the operator tools: disk guard, clock, maintenance hook (see ops.go).
	ops *opsState
	// servers are the HTTP servers of the cluster RPC and join channels.
	servers []*http.Server
	// peer is the cluster RPC client; fwd forwards master-only requests with it.
	peer  *cluster.Client
	fwd   *cluster.Forwarder
	ctlLn net.Listener
	// metrics are served on --metrics-addr (see metrics.go).
	metrics *metrics
	// guard checks what members forward (forwarded.go).
	guard *forwardGuard
	// wiper wipes a removed node's copy of the cluster state (forget.go).
	wiper *clusterWiper
	// limits are the listeners' connection caps (see limits.go).
	limits *listenerLimits

	// gate admits one identity-changing operation at a time (create, join, ...).
	gate opGate
	// memberTurn serializes membership changes on the master (admit, delete, voters, ...).
	memberTurn memberTurn
	// catchUp is what non-voters must apply before the voter policy promotes them.
	catchUp voterpolicy.Targets
	// kick wakes the master's voter duty (voterReconciler.duty).
	kick chan struct{}
	// standingW finds out when this node was removed or fenced (standingwatch.go).
	standingW *standingWatch
	// tools is the state of maintenance mode and scheduled backups (maintenance.go).
	tools toolState
	// members looks up the members as this node sees them (fence.go).
	members *memberView
	// versions keeps the cluster version (version.go).
	versions *versionKeeper
	// certs renews certificates (rotate.go).
	certs *certRenewer
	// voters keeps the Raft configuration in line with the voter policy (voters.go).
	voters *voterReconciler
	// promoter makes this node the master, by transfer or forced recovery (promote.go).
	promoter *promoter
	// joiner joins this node to a cluster (join.go).
	joiner *joiner
	// admitter admits joining nodes, on the master or relayed to it (admit.go).
	admitter *admitter
	// syncer brings this node in line with the master, or back after fencing (sync.go).
	syncer *syncer
	// creator founds a cluster and makes join commands (create.go).
	creator *creator
	// watcher answers configuration watches (watch.go).
	watcher *watcher
	// diskW reads the mail store's free space into disk (diskfull.go).
	diskW *diskWatch
	// honesty keeps status to what this node can vouch for (honesty.go).
	honesty *honesty
	// health answers the health checks (health.go).
	health *health
	// checker runs pmgcm check (check.go).
	checker *checker
	// backups makes and restores backups, on demand and on schedule (backups.go).
	backups *backups
	// stat is this node's view of the cluster: status and its rows (status.go).
	stat *statusReporter
	// maint keeps maintenance mode and opens and closes SMTP intake (maintstate.go).
	maint *maintenance
	// ctlAPI answers status, create and configuration requests (controlapi.go).
	ctlAPI *controlAPI
	// tokens rotates the join token (jointoken.go).
	tokens *tokenKeeper
	// memberOps deletes members (members.go).
	memberOps *memberOps
	// report makes the diagnostics bundle (report.go).
	report *reporter

	closeOnce sync.Once
	closeErr  error
	bg        sync.WaitGroup
	stop      chan struct{}
	// opened is closed once openMail has opened the mail system (d.mail), the last part
	// that Raft's leader duties (afterOpen), peers' requests (whenMailOpen; RPC is served
	// before it) and the control socket need; they read d.mail only then (mailSys).
	opened chan struct{}
	// drain stops without losing or hanging a write (drain.go).
	drain *stopDrain
}

// New validates cfg and returns a Daemon that is not yet running.
func New(cfg Config) (*Daemon, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	d := &Daemon{cfg: cfg, logger: logger, stop: make(chan struct{}), opened: make(chan struct{}), kick: make(chan struct{}, 1)}
	d.drain = newStopDrain(d)
	d.ops = newOpsState(cfg, logger)
	d.metrics = newMetrics(d)
	return d, nil
}

// Open locks the data directory, loads the node's identity, starts Raft, the cluster port
// and the control socket. On error everything opened so far is closed again.
func (d *Daemon) Open() (err error) {
	d.started = time.Now()
	defer func() {
		if err != nil {
			_ = d.Close()
		}
	}()
	if d.dir, err = openDataDir(d.cfg.DataDir); err != nil {
		return err
	}
	if err := d.loadNodeFile(); err != nil {
		return err
	}
	id, key, err := d.dir.loadIdentity(d.self().Name, net.ParseIP(d.self().IP))
	if err != nil {
		return err
	}
	d.key = key
	d.fsm = fsm.New()
	// Values out of the heap (issue 16): a cache of the replicated state, rebuilt at each
	// start from the Raft snapshot and log. A directory that cannot be made or emptied
	// (a full disk at the first start, a stray entry in it) costs memory, not the start:
	// the values then stay in the heap, as when a write fails.
	spill := d.dir.file("fsm-values")
	if err := d.fsm.SpillTo(spill, func(err error) {
		d.logger.Warn("cannot write configuration values to disk: they stay in memory", "dir", spill, "error", err)
	}); err != nil {
		d.logger.Warn("configuration values stay in memory this run: free disk space, or remove what is in the directory, and restart pmgclusterd to keep them on disk",
			"dir", spill, "error", err)
	}
	d.fsm.OnSpillFault(func(err error) {
		d.logger.Error("a configuration value cannot be read back from this node's disk: reads of it and Raft snapshots fail "+
			"until they read again or pmgclusterd is restarted, which rebuilds the values from the Raft log and snapshot; "+
			"restart it, and check the disk (dmesg)",
			"dir", spill, "error", err)
	}, func() {
		d.logger.Info("configuration values read back again: a snapshot read every one", "dir", spill)
	})
	d.raft = newRaftSlot(d)
	d.trust = newPeerTrust(d) // before the mux: it authorizes the mux's peers
	d.guard = newForwardGuard(d)
	d.wiper = newClusterWiper(d)
	if d.limits, err = planLimits(d.cfg, d.logger); err != nil {
		return err
	}
	muxCfg := transport.Config{
		BindAddr:  d.cfg.Addr(),
		Logger:    d.logger.Named("transport"),
		Authorize: d.trust.authorize,
		Refused:   func(addr string, r transport.Refusal) { d.standingW.refused(addr, r) },
	}
	d.limits.mux(&muxCfg)
	d.mux, err = transport.New(muxCfg, id)
	if err != nil {
		return err
	}
	d.standingW = &standingWatch{
		logger: d.logger, timeout: d.cfg.RPCTimeout, mux: d.mux, fsm: d.fsm, peers: &d.peers, gate: &d.gate,
		self: d.self, updateSelf: d.updateSelf, stopRaft: d.raft.stop, forget: d.wiper.forget, kick: make(chan struct{}, 1),
		clients: clientCache{local: net.ParseIP(d.cfg.IP)},
	}
	d.writes = newWriter(d)
	d.members = newMemberView(d)
	d.versions = newVersionKeeper(d)
	d.diskW = newDiskWatch(d)
	d.honesty = newHonesty(d)
	d.backups = newBackups(d)
	d.stat = newStatusReporter(d)
	d.maint = newMaintenance(d)
	d.certs = newCertRenewer(d)
	d.voters = newVoterReconciler(d)
	d.promoter = newPromoter(d)
	d.joiner = newJoiner(d)
	d.admitter = newAdmitter(d)
	d.syncer = newSyncer(d)
	d.tokens = newTokenKeeper(d)
	d.creator = newCreator(d)
	d.memberOps = newMemberOps(d)
	d.intake = newIntakePolicy(d)
	d.watcher = newWatcher(d)
	d.report = newReporter(d)
	d.health = newHealth(d)
	d.checker = newChecker(d)
	d.ctlAPI = newControlAPI(d)
	// The mux listens first: the Raft layer advertises its bound address.
	if err := d.mux.Open(); err != nil {
		return fmt.Errorf("open cluster port %s: %w: is another service using it? choose another with --port", d.cfg.Addr(), err)
	}
	if err := d.trust.load(); err != nil {
		return err
	}
	d.intake.load()
	d.certs.resolve()
	// A member asks its peers where it stands before it takes part in Raft: an old member
	// coming back after a forced promotion elsewhere must not vote or lead.
	if !d.standing().out() {
		ctx, cancel := context.WithTimeout(context.Background(), startupStandingTimeout)
		st, a := d.standingW.ask(ctx, startupStandingTimeout)
		cancel()
		d.standingW.apply(st, a)
	}
	if d.standing().kind == standRemoved {
		d.wiper.forget() // removed before this build, or before the wipe finished
	}
	d.versions.watchHalt() // before Raft applies anything
	if err := d.openRaft(!d.standing().out()); err != nil {
		return err
	}
	d.openRPC()
	d.ops.start(d.stop, &d.bg)
	if err := d.openMail(); err != nil {
		return err
	}
	close(d.opened)
	if err := d.openControl(); err != nil {
		return err
	}
	if err := d.openMetrics(); err != nil {
		return err
	}
	d.bg.Add(4)
	go func() {
		defer d.bg.Done()
		ctx, cancel := d.stopContext()
		defer cancel()
		d.standingW.run(ctx)
	}()
	go func() {
		defer d.bg.Done()
		ctx, cancel := d.stopContext()
		defer cancel()
		d.creator.reconcileIdentity(ctx)
	}()
	go d.promoter.finishPendingEpoch()
	go func() {
		defer d.bg.Done()
		ctx, cancel := d.stopContext()
		defer cancel()
		d.trust.follow(ctx)
	}()
	if d.cfg.ExportDir != "" {
		d.bg.Add(1)
		go newExporter(d).run()
	}
	d.logger.Info("pmgclusterd started", "name", d.self().Name, "cid", d.self().CID,
		"address", d.cfg.Addr(), "socket", d.cfg.Socket, "data-dir", d.cfg.DataDir)
	return nil
}

// openRaft starts Raft for this node's CID. A node that never joined a cluster
// bootstraps itself as the single voter of its own configuration. With start false (a
// removed or fenced node) the Raft node is made but never opened: every method of it
// answers as a stopped node does, until join or sync restarts it.
func (d *Daemon) openRaft(start bool) error {
	if d.self().WipeRaft {
		// A join was interrupted after the cluster admitted this node: finish replacing
		// the node's own Raft state before starting.
		if err := d.joiner.wipeRaft(); err != nil {
			return err
		}
	}
	rc := d.cfg.Raft
	rc.Dir = d.dir.file("raft")
	rc.LocalID = raftnode.ServerID(d.self().CID)
	rc.Address = raft.ServerAddress(d.cfg.Addr())
	rc.Bootstrap = !d.self().Joined
	rc.Logger = d.logger.Named("raft")
	n, err := raftnode.New(rc, d.fsm, d.mux.RaftLayer)
	if err != nil {
		return err
	}
	n.OnLeader(d.voters.duty)
	n.OnLeader(d.versions.duty)
	for _, duty := range d.leaderDuties() { // maintenance.go
		n.OnLeader(afterOpen(d.opened, duty))
	}
	if start {
		if err := n.Open(); err != nil {
			return d.raftOpenErr(err)
		}
	}
	d.raftp.Store(n)
	return nil
}

func (d *Daemon) raftOpenErr(err error) error {
	switch {
	case errors.Is(err, raftnode.ErrNoSpace):
		return fmt.Errorf("%v: free space on the filesystem of %s (the Raft log allocates 16 MiB segments), then start pmgclusterd again", err, d.dir.file("raft"))
	case errors.Is(err, raftnode.ErrCorrupt):
		return fmt.Errorf("%w: %v: move the data directory aside and join this node to its cluster again (pmgcm join), or restore a backup on a fresh node",
			ErrCorruptData, err)
	case errors.Is(err, raftnode.ErrLocked):
		return fmt.Errorf("%w: %v: stop the other process", ErrDataDirInUse, err)
	case errors.Is(err, os.ErrPermission):
		return unusable(d.dir.file("raft"), err)
	}
	return err
}

// loadNodeFile reads node.json, or writes it on first start; the address must not change.
func (d *Daemon) loadNodeFile() error {
	nf, ok, err := d.dir.readNodeFile()
	if err != nil {
		return err
	}
	if !ok {
		nf = nodeFile{Name: d.cfg.Name, IP: d.cfg.IP, Port: d.cfg.Port, CID: 1}
		if err := d.dir.writeNodeFile(nf); err != nil {
			return fmt.Errorf("write %s: %w", d.dir.file("node.json"), err)
		}
	}
	if !net.ParseIP(nf.IP).Equal(net.ParseIP(d.cfg.IP)) || nf.Port != d.cfg.Port {
		return fmt.Errorf("%w: %s was set up as %s:%d, started with --ip %s --port %d: start it with its own address (the cluster knows it by it)",
			ErrAddressChanged, d.cfg.DataDir, nf.IP, nf.Port, d.cfg.IP, d.cfg.Port)
	}
	if nf.Name != d.cfg.Name {
		d.logger.Warn("--name differs from the node's recorded name; keeping the recorded one",
			"recorded", nf.Name, "flag", d.cfg.Name)
	}
	d.node.Store(&nf)
	return nil
}

// self returns this node's identity file as it is now. It never blocks.
func (d *Daemon) self() nodeFile {
	if nf := d.node.Load(); nf != nil {
		return *nf
	}
	return nodeFile{}
}

// setSelf writes node.json and makes nf this node's identity.
func (d *Daemon) setSelf(nf nodeFile) error {
	return d.updateSelf(func(cur *nodeFile) { *cur = nf })
}

// updateSelf changes this node's identity file with change, writes it (fsynced) and
// then publishes it. Writers are serialized; readers (self) see the old file until the
// new one is on disk.
func (d *Daemon) updateSelf(change func(*nodeFile)) error {
	d.nodeMu.Lock()
	defer d.nodeMu.Unlock()
	nf := d.self()
	change(&nf)
	if err := d.dir.writeNodeFile(nf); err != nil {
		return fmt.Errorf("write %s: %w", d.dir.file("node.json"), err)
	}
	d.node.Store(&nf)
	return nil
}

// afterOpen returns duty run once opened is closed: a node that wins an election while
// Open is still opening the mail system runs its backup and maintenance duties only once
// it is open. It returns without running duty if the term ends first.
func afterOpen(opened <-chan struct{}, duty raftnode.LeaderDuty) raftnode.LeaderDuty {
	return func(ctx context.Context) {
		select {
		case <-opened:
			duty(ctx)
		case <-ctx.Done():
		}
	}
}

// errStarting refuses a peer's request that needs the mail system before it is open.
var errStarting = errors.New("this node is still starting: its mail store is not open yet; try again in a moment")

// whenMailOpen waits until openMail has opened the mail system, for a peer's request
// served before that (RPC is served before the mail system opens). It returns
// errStarting if ctx ends first, and the shutting-down refusal if the daemon closes.
func (d *Daemon) whenMailOpen(ctx context.Context) error {
	select {
	case <-d.opened:
		return nil
	default:
	}
	select {
	case <-d.opened:
		return nil
	case <-d.stop:
		return d.drain.errShuttingDown()
	case <-ctx.Done():
		return errStarting
	}
}

// mailSys returns the mail system once openMail has opened it, nil before: a status or
// a metrics scrape asked by a peer while the node starts reports no mail rather than
// reading d.mail while openMail sets it.
func (d *Daemon) mailSys() *mailSystem {
	select {
	case <-d.opened:
		return d.mail
	default:
		return nil
	}
}

// stopContext returns a context that ends when the daemon closes.
func (d *Daemon) stopContext() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-d.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// Wait blocks until ctx ends, then closes the daemon.
func (d *Daemon) Wait(ctx context.Context) error {
	<-ctx.Done()
	d.logger.Info("shutting down")
	return d.Close()
}

// Close stops the control socket, Raft and the cluster port and releases the data
// directory. It is idempotent.
func (d *Daemon) Close() error {
	d.closeOnce.Do(func() {
		close(d.stop)
		// SMTP first: sending MTAs go to the other MX at once; the mail in flight is stored.
		errs := []error{d.mail.drainMail()}
		if d.ctl != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			errs = append(errs, ignoreClosed(d.ctl.Shutdown(ctx)))
			cancel()
			_ = os.Remove(d.cfg.Socket)
		}
		errs = append(errs, d.mail.closeMail())
		d.drain.drainForwarded()
		led := false
		if n := d.rn(); n != nil {
			led = n.IsLeader()
			errs = append(errs, n.Close())
		}
		d.drain.closeServers(led)
		if d.mux != nil {
			errs = append(errs, d.mux.Close())
		}
		d.drain.answerControl()
		d.bg.Wait()
		if d.fsm != nil {
			d.fsm.Close() // after Raft: nothing applies any more
		}
		d.limits.close()
		errs = append(errs, d.dir.close())
		d.closeErr = errors.Join(errs...)
	})
	return d.closeErr
}

func ignoreClosed(err error) error {
	if errors.Is(err, http.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}
