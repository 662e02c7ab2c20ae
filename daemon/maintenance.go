package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/cluster"
	"github.com/pmgcm/pmgcm/fsm"
	"github.com/pmgcm/pmgcm/raftnode"
	"github.com/pmgcm/pmgcm/smtpd"
)

// ErrMaintenance means the node is in maintenance (pmgcm maintenance on): it takes no
// mail and does not become master.
var ErrMaintenance = errors.New("this node is in maintenance")

// maintenanceFile is where the node keeps its maintenance mode, in its own data
// directory: the mode belongs to the node (it must hold while the cluster has no
// quorum, and a backup restored elsewhere must not carry it), not to the replicated
// configuration.
const maintenanceFile = "maintenance.json"

// handoverEvery paces the retries of a master in maintenance that found no node to hand
// mastership to.
const handoverEvery = 2 * time.Second

// maintenanceRecord is the content of maintenanceFile.
type maintenanceRecord struct {
	On    bool      `json:"on"`
	Since time.Time `json:"since"`
}

// toolState is the state of maintenance mode and scheduled backups.
type toolState struct {
	// maintMu serializes maintenance changes: each writes the file, then opens or
	// closes SMTP intake (waiting for the transactions in flight). Nothing else takes it.
	maintMu sync.Mutex
	maint   bool
	since   time.Time
	loaded  bool
	flagMu  sync.RWMutex // guards maint, since and loaded for readers

	backup backupState
	// halt wakes the handover duty when the state machine halts (handover.go).
	halt haltSignal
}

// maintenanceOn reports whether this node is in maintenance, reading the file once.
func (mt *maintenance) maintenanceOn() bool {
	o := mt.tools
	o.flagMu.RLock()
	on, loaded := o.maint, o.loaded
	o.flagMu.RUnlock()
	if loaded {
		return on
	}
	rec, err := readMaintenance(mt.dir.file(maintenanceFile))
	if err != nil {
		mt.logger.Warn("ignoring an unreadable maintenance file: the node is in service; set the mode again with pmgcm maintenance on|off",
			"path", mt.dir.file(maintenanceFile), "error", err)
	}
	o.flagMu.Lock()
	if !o.loaded {
		o.maint, o.since, o.loaded = rec.On, rec.Since, true
	}
	on = o.maint
	o.flagMu.Unlock()
	return on
}

// maxMaintenanceFile bounds maintenanceFile, a few dozen bytes when the daemon wrote it.
const maxMaintenanceFile = 4 << 10

// readMaintenance reads maintenanceFile: none is "in service"; a file that is too large
// or not a record is an error (and the node is in service).
func readMaintenance(path string) (maintenanceRecord, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return maintenanceRecord{}, nil
	}
	if err != nil {
		return maintenanceRecord{}, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxMaintenanceFile+1))
	if err != nil {
		return maintenanceRecord{}, err
	}
	return parseMaintenance(b)
}

// parseMaintenance decodes the content of maintenanceFile.
func parseMaintenance(b []byte) (maintenanceRecord, error) {
	if len(b) > maxMaintenanceFile {
		return maintenanceRecord{}, fmt.Errorf("over %d bytes", maxMaintenanceFile)
	}
	var rec maintenanceRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return maintenanceRecord{}, err
	}
	return rec, nil
}

// refuseInMaintenance refuses what a node in maintenance must not do.
func (mt *maintenance) refuseInMaintenance(what string) error {
	if mt.maintenanceOn() {
		return fmt.Errorf("%w: %s is refused until: pmgcm maintenance off", ErrMaintenance, what)
	}
	return nil
}

// maintenance takes a node out of service or back: this one (CID 0 or its own), or
// another member, asked over the cluster port.
func (mt *maintenance) maintenance(ctx context.Context, req api.MaintenanceRequest) (*api.MaintenanceResponse, error) {
	if err := mt.host.checkServing(); err != nil {
		return nil, err
	}
	me := mt.host.self()
	if req.CID == 0 || req.CID == me.CID {
		res, err := mt.setMaintenance(ctx, req.On)
		return &res, err
	}
	m, ok := mt.fsm.Member(req.CID)
	if !ok {
		return nil, fmt.Errorf("%w: cid %d (pmgcm status lists the nodes)", fsm.ErrUnknownMember, req.CID)
	}
	res, err := mt.peer().SetMaintenance(ctx, memberAddr(m), req.On)
	if cluster.NotSupported(err) {
		return nil, fmt.Errorf("%w: %s (cid %d) runs an older version without maintenance mode: upgrade it, or stop its SMTP intake by hand",
			ErrBadRequest, m.Name, m.CID)
	}
	if err != nil {
		return nil, err
	}
	return &res, nil
}

// SetMaintenance implements cluster.OpsHandler: another node relays `pmgcm maintenance
// --cid` for this one.
func (h rpcHandler) SetMaintenance(ctx context.Context, on bool) (api.MaintenanceResponse, error) {
	if err := h.d.checkServing(); err != nil {
		return api.MaintenanceResponse{}, err
	}
	if err := h.d.whenMailOpen(ctx); err != nil {
		return api.MaintenanceResponse{}, err
	}
	return h.d.maint.setMaintenance(ctx, on)
}

// setMaintenance records the mode, then closes or reopens SMTP intake, and on the
// master hands mastership over.
func (mt *maintenance) setMaintenance(ctx context.Context, on bool) (api.MaintenanceResponse, error) {
	o := mt.tools
	me := mt.host.self()
	res := api.MaintenanceResponse{CID: me.CID, Name: me.Name, On: on}
	mt.maintenanceOn() // loaded
	o.maintMu.Lock()
	defer o.maintMu.Unlock()
	rec := maintenanceRecord{On: on, Since: time.Now().UTC()}
	b, _ := json.Marshal(rec)
	if err := writeFileAtomic(mt.dir.file(maintenanceFile), b, 0o600); err != nil {
		return res, fmt.Errorf("record the maintenance mode in %s: %w", mt.dir.file(maintenanceFile), err)
	}
	o.flagMu.Lock()
	changed := o.maint != on
	o.maint, o.since = on, rec.Since
	o.flagMu.Unlock()
	if changed {
		mt.logger.Info("maintenance mode", "on", on)
	}
	if err := mt.setSMTP(!on); err != nil {
		return res, err
	}
	if on && mt.host.rn().IsLeader() {
		cid, err := mt.handOver(ctx)
		if err != nil {
			res.Warning = err.Error()
		}
		res.HandedOver = cid
	}
	return res, nil
}

// setSMTP opens (on) or closes SMTP intake; a no-op without --smtp-port or when it is
// already so. It is called with maintMu held, or before the control socket opens.
func (mt *maintenance) setSMTP(on bool) error {
	if mt.cfg.SMTPPort == 0 || mt.mail() == nil {
		return nil
	}
	m := mt.mail()
	m.mu.Lock()
	cur := m.smtp
	if !on {
		m.smtp = nil
	}
	m.mu.Unlock()
	if !on {
		if cur == nil {
			return nil
		}
		// As a planned stop: no new connection, the transactions in flight finish.
		ctx, cancel := context.WithTimeout(context.Background(), mt.cfg.SMTPDrainTimeout)
		derr := cur.Drain(ctx)
		cancel()
		mt.logger.Info("SMTP intake closed: the node is in maintenance; senders use the other MX")
		return errors.Join(derr, cur.Close())
	}
	if cur != nil {
		return nil
	}
	select {
	case <-mt.stop:
		return nil // the daemon is closing: closeMail has taken intake down for good
	default:
	}
	srv, err := mt.newSMTP()
	if err != nil {
		return err
	}
	if err := srv.Open(); err != nil {
		return fmt.Errorf("SMTP intake on %s: %w: choose another --smtp-port, or 0 to disable it",
			net.JoinHostPort(mt.cfg.IP, strconv.Itoa(mt.cfg.SMTPPort)), err)
	}
	m.mu.Lock()
	m.smtp = srv
	m.mu.Unlock()
	return nil
}

// takeSMTP removes the SMTP server from the mail system, for closeMail. It waits for a
// maintenance change under way, so that none reopens intake afterwards (setSMTP does not
// once the daemon is stopping).
func (mt *maintenance) takeSMTP() *smtpd.Server {
	mt.tools.maintMu.Lock()
	defer mt.tools.maintMu.Unlock()
	m := mt.mail()
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.smtp
	m.smtp = nil
	return s
}

// smtpServer returns the SMTP intake server, nil while it is closed (maintenance) or off.
func (m *mailSystem) smtpServer() *smtpd.Server {
	if m == nil {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.smtp
}

// maintenanceReason is the health checks' maintenance hook (setMaintenanceHook).
func (mt *maintenance) maintenanceReason() (bool, string) {
	if !mt.maintenanceOn() {
		return false, ""
	}
	mt.tools.flagMu.RLock()
	since := mt.tools.since
	mt.tools.flagMu.RUnlock()
	return true, "pmgcm maintenance on since " + since.Format(time.RFC3339) + "; pmgcm maintenance off puts it back"
}

// newSMTP makes the SMTP intake server of this node (not yet listening).
func (mt *maintenance) newSMTP() (*smtpd.Server, error) {
	cfg := smtpd.DefaultConfig()
	cfg.Addr = net.JoinHostPort(mt.cfg.IP, strconv.Itoa(mt.cfg.SMTPPort))
	cfg.Hostname = mt.host.self().Name
	cfg.Store, cfg.Policy = mailIntake{mt.mail().store}, mt.policy
	cfg.LowStorage = mt.ops.disk.active
	if mt.metrics != nil {
		cfg.Observe = mt.metrics.observeMail
	}
	cfg.Logger = mt.logger.Named("smtpd")
	mt.limits.smtp(&cfg, *mt.cfg)
	return smtpd.New(cfg)
}

// handOver gives mastership to the most up-to-date voter that is up and not in
// maintenance itself, and returns its CID.
func (mt *maintenance) handOver(ctx context.Context) (uint64, error) {
	cfg, err := mt.host.rn().Configuration()
	if err != nil {
		return 0, err
	}
	me := raftnode.ServerID(mt.host.self().CID)
	type cand struct {
		cid     uint64
		applied uint64
	}
	var (
		mu    sync.Mutex
		best  *cand
		wg    sync.WaitGroup
		found int
	)
	for _, s := range cfg.Servers {
		if s.Suffrage != raft.Voter || s.ID == me {
			continue
		}
		m, ok := mt.fsm.Member(parseCID(s.ID))
		if !ok {
			continue
		}
		found++
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := mt.stat.remoteNode(ctx, m)
			if n.State == api.StateDown || n.State == api.StateMaintenance || n.Error != "" {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if best == nil || n.AppliedIndex > best.applied {
				best = &cand{cid: m.CID, applied: n.AppliedIndex}
			}
		}()
	}
	wg.Wait()
	if best == nil {
		if found == 0 {
			return 0, errors.New("this node is the only voter: it stays master while in maintenance (join or promote another node to hand over)")
		}
		return 0, errors.New("no other voter is up and out of maintenance: this node stays master until one is")
	}
	transfer := mt.transferTo
	if mt.fsm.Halted() != nil {
		transfer = mt.transferHalted // handover.go
	}
	if err := transfer(ctx, best.cid); err != nil {
		return 0, fmt.Errorf("hand mastership to cid %d: %w", best.cid, err)
	}
	mt.logger.Info("handed mastership over", "to-cid", best.cid, "why", mt.handoverReason())
	return best.cid, nil
}

// maintenanceDuty runs on the master for one leadership term: a node in maintenance, or
// whose state machine halted, that becomes master hands mastership over at once, and
// retries while no voter can take it (handover.go).
func (mt *maintenance) maintenanceDuty(ctx context.Context) {
	mt.handoverDuty(ctx, mt.handOver)
}

// leaderDuties are the leader duties of maintenance and scheduled backups, registered
// with raftnode.Node.OnLeader: each runs for one leadership term, until ctx ends.
func (d *Daemon) leaderDuties() []func(context.Context) {
	return []func(context.Context){d.maint.maintenanceDuty, d.backups.backupDuty}
}
