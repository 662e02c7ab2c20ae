package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/cluster"
	"github.com/pmgcm/pmgcm/internal/version"
	"github.com/pmgcm/pmgcm/mailrepl"
	"github.com/pmgcm/pmgcm/mailstore"
	"github.com/pmgcm/pmgcm/smtpd"
	"github.com/pmgcm/pmgcm/transport"
)

// Configuration keys that steer mail intake and retention.
const (
	keyRelayDomains  = "mail/relay_domains"
	keyMaxSize       = "mail/max_size"
	keyRetentionDays = "mail/retention_days"
)

// Intervals of the mail housekeeping.
const (
	retentionInterval = 10 * time.Minute
	scrubInterval     = time.Hour
)

// mailSystem is the node's quarantine: the store, its replication to the other nodes
// (outside Raft, over the mail channel) and SMTP intake.
type mailSystem struct {
	store *mailstore.Store
	srv   *http.Server

	mu   sync.Mutex // guards repl across a join's wipe
	repl *mailrepl.Replicator

	smtp *smtpd.Server

	logger  hclog.Logger
	mux     *transport.Mux
	intake  *intakePolicy
	members *memberView
	// bg and stopContext are the daemon's background tasks and their context.
	bg          *sync.WaitGroup
	stopContext func() (context.Context, context.CancelFunc)
	// drainTimeout is --smtp-drain-timeout.
	drainTimeout time.Duration
	// takeSMTP takes SMTP intake down for good (maintenance.takeSMTP).
	takeSMTP func() *smtpd.Server
	// host is what the mail system needs of the rest of the daemon.
	host mailHost
}

// mailHost is what the mail system needs of the daemon.
type mailHost interface {
	self() nodeFile
	checkServing() error
	// atLevel says whether every member speaks the features of level (Daemon.atLevel).
	atLevel(level int) bool
}

// openMail opens the mail store, serves replication on the mail channel, starts the
// replicator and, with --smtp-port, SMTP intake.
func (d *Daemon) openMail() error {
	store, err := mailstore.Open(d.dir.file("mail"), mailstore.Options{LocalCID: func() uint64 { return d.self().CID }})
	if err != nil {
		if errors.Is(err, mailstore.ErrCorrupt) {
			return corrupt(d.dir.file("mail"), err)
		}
		return fmt.Errorf("open mail store %s: %w", d.dir.file("mail"), err)
	}
	m := &mailSystem{store: store, logger: d.logger, mux: d.mux, intake: d.intake, members: d.members,
		bg: &d.bg, stopContext: d.stopContext, drainTimeout: d.cfg.SMTPDrainTimeout, takeSMTP: d.maint.takeSMTP, host: d}
	d.mail = m
	m.purgeMail() // before replication: never fetch what retention already dropped
	var ln net.Listener
	m.srv, ln = d.limits.channelServer(transport.ChanMail, mailrepl.Handler(store), d.mux.Listener(transport.ChanMail))
	d.bg.Add(1)
	go func() {
		defer d.bg.Done()
		_ = m.srv.Serve(ln)
	}()
	if err := m.startReplicator(); err != nil {
		return err
	}
	// A node in maintenance keeps SMTP intake closed (maintenance.go).
	d.ops.setMaintenanceHook(d.maint.maintenanceReason)
	if err := d.maint.setSMTP(!d.maint.maintenanceOn()); err != nil {
		return err
	}
	d.bg.Add(2)
	go m.mailHousekeeping()
	go d.diskW.run()
	return nil
}

func (ms *mailSystem) startReplicator() error {
	cfg := mailrepl.DefaultConfig()
	cfg.Store, cfg.Peers = ms.store, ms.mailPeers
	// Body fetches go over synchttp (mailrepl.NewHTTPClient), the events long polls over
	// the mux's net/http client, whose response-header timeout (30 s) stays above PollWait.
	cfg.Client = mailrepl.NewHTTPClient(func(ctx context.Context, addr string) (net.Conn, error) {
		return ms.mux.Dial(ctx, addr, transport.ChanMail)
	}, ms.mux.HTTPClient(transport.ChanMail).Transport, cfg.Fetchers)
	cfg.Logger = ms.logger.Named("mailrepl")
	cfg.Bulk = ms.bulkBodies
	r, err := mailrepl.New(cfg)
	if err != nil {
		return err
	}
	r.Start()
	ms.mu.Lock()
	ms.repl = r
	ms.mu.Unlock()
	return nil
}

// bulkBodies says whether the replicator may ask for several bodies to a request
// (mailrepl.PathBodies): once every member serves them, at feature level 2.
func (ms *mailSystem) bulkBodies() bool { return ms.host.atLevel(version.LevelClusterVersion) }

// replicator returns the running replicator.
func (ms *mailSystem) replicator() *mailrepl.Replicator {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	return ms.repl
}

// mailPeers are the other members of the current epoch: a removed or fenced node
// exchanges no mail until it is back.
func (ms *mailSystem) mailPeers() []mailrepl.Peer {
	if ms.host.checkServing() != nil {
		return nil
	}
	me := ms.host.self().CID
	var out []mailrepl.Peer
	for _, m := range ms.members.active() {
		if m.CID != me {
			out = append(out, mailrepl.Peer{CID: m.CID, Addr: memberAddr(m)})
		}
	}
	return out
}

// wipeMail empties the mail store when the node joins a cluster (its data is replaced by
// the cluster's); replication starts over.
func (ms *mailSystem) wipeMail() error {
	if r := ms.replicator(); r != nil {
		_ = r.Close()
	}
	if err := ms.store.Wipe(); err != nil {
		return fmt.Errorf("empty the mail store: %w", err)
	}
	return ms.startReplicator()
}

// drainMail stops the SMTP intake for a planned stop: it stops accepting connections at
// once and lets the transactions in flight finish within SMTPDrainTimeout, while the
// store is still open (closeMail closes it after).
func (ms *mailSystem) drainMail() error {
	s := ms.smtpServer()
	if s == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), ms.drainTimeout)
	defer cancel()
	return s.Drain(ctx)
}

// closeMail stops intake first, then replication, then the store.
func (ms *mailSystem) closeMail() error {
	m := ms
	if m == nil {
		return nil
	}
	var errs []error
	if s := ms.takeSMTP(); s != nil {
		errs = append(errs, s.Close())
	}
	if r := ms.replicator(); r != nil {
		errs = append(errs, r.Close())
	}
	if m.srv != nil {
		_ = m.srv.Close()
	}
	errs = append(errs, m.store.Close())
	return errors.Join(errs...)
}

// mailHousekeeping applies the retention setting and checks bodies against their
// checksums (a corrupt one is fetched again from a peer).
func (ms *mailSystem) mailHousekeeping() {
	defer ms.bg.Done()
	ctx, cancel := ms.stopContext()
	defer cancel()
	retention := time.NewTicker(retentionInterval)
	defer retention.Stop()
	scrub := time.NewTicker(scrubInterval)
	defer scrub.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-retention.C:
			ms.purgeMail()
		case <-scrub.C:
			if bad, err := ms.store.Scrub(ctx); err != nil && ctx.Err() == nil {
				ms.logger.Warn("mail scrub", "error", err)
			} else if len(bad) > 0 {
				ms.logger.Warn("corrupt mail bodies found; fetching them again from peers", "ids", bad)
				ms.replicator().Kick()
			}
		}
	}
}

// purgeMail drops messages older than mail/retention_days (none when unset or 0), then
// compacts the mail event log.
func (ms *mailSystem) purgeMail() {
	v, ok := ms.intake.setting(keyRetentionDays)
	if !ok {
		return
	}
	days, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || days <= 0 {
		if err != nil {
			ms.logger.Warn("ignoring a bad retention setting", "key", keyRetentionDays, "value", v)
		}
		return
	}
	n, err := ms.store.Purge(time.Now().Add(-time.Duration(days) * 24 * time.Hour))
	if err != nil {
		ms.logger.Warn("mail retention", "error", err)
		return
	}
	if n > 0 {
		ms.logger.Info("mail retention purged messages", "count", n, "days", days)
	}
	// The events of purged messages are needed by no node any more: drop them, so that
	// the index does not grow with every message ever received.
	if n, err := ms.store.Compact(); err != nil {
		ms.logger.Warn("mail event log compaction", "error", err)
	} else if n > 0 {
		ms.logger.Info("mail event log compacted", "events", n, "floors", ms.store.Floors())
	}
}

// mailIntake adapts the store to smtpd.
type mailIntake struct{ s *mailstore.Store }

func (m mailIntake) Accept(from string, to []string, r io.Reader) (string, error) {
	meta, err := m.s.Accept(from, to, r)
	return meta.ID, err
}

// mailPolicy reads intake settings from the replicated configuration.
type mailPolicy struct{ d *Daemon }

func (p mailPolicy) RelayDomains() []string {
	v, ok := p.d.intake.setting(keyRelayDomains)
	if !ok {
		return nil
	}
	return strings.FieldsFunc(v, func(r rune) bool {
		return r == ',' || r == ' ' || r == '\n' || r == '\t' || r == '\r' || r == ';'
	})
}

func (p mailPolicy) MaxSize() int64 {
	v, ok := p.d.intake.setting(keyMaxSize)
	if !ok {
		return 0
	}
	n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	return n
}

// mailStatus returns the local store's size and replication backlog.
func (ms *mailSystem) mailStatus() *api.MailStatus {
	if ms == nil {
		return nil
	}
	msgs, bytes := ms.store.Stats()
	st := &api.MailStatus{Messages: msgs, Bytes: bytes}
	if r := ms.replicator(); r != nil {
		b := r.BacklogState() // read at most a moment ago: listing the missing bodies costs
		st.BacklogMessages, st.BacklogBytes, st.BacklogKnown = b.Messages, b.Bytes, b.Known
	}
	return st
}

func quarantineMessage(m mailstore.Meta) api.QuarantineMessage {
	return api.QuarantineMessage{ID: m.ID, OriginCID: m.Origin, From: m.From, To: m.To, Subject: m.Subject,
		Size: m.Size, SHA256: m.SHA256, State: m.State, Received: m.Received}
}

func (ms *mailSystem) handleQuarantineList(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	list, err := ms.store.List(mailstore.Filter{From: q.Get("from"), To: q.Get("to"), State: q.Get("state")})
	if err != nil {
		writeErr(w, err)
		return
	}
	// Streamed (issue 16): the bytes are those of the []api.QuarantineMessage encoded whole.
	streamJSON(w, "[", "]", len(list), func(i int) any { return quarantineMessage(list[i]) })
}

func (ms *mailSystem) handleQuarantineShow(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get("id")
	// Check the body before serving it: a corrupt one is moved aside, marked missing and
	// fetched again from a peer, never shown.
	if err := ms.store.Verify(id); err != nil {
		if errors.Is(err, mailstore.ErrCorrupt) || errors.Is(err, mailstore.ErrChecksum) {
			ms.logger.Warn("corrupt mail body found; fetching it again from a peer", "id", id)
			ms.replicator().Kick()
		}
		writeErr(w, mailErr(id, err))
		return
	}
	f, meta, err := ms.store.OpenBody(id)
	if err != nil {
		writeErr(w, mailErr(id, err))
		return
	}
	defer f.Close()
	w.Header().Set("Content-Type", "message/rfc822")
	w.Header().Set(api.HeaderSHA256, meta.SHA256)
	w.Header().Set("Content-Length", strconv.FormatInt(meta.Size, 10))
	_, _ = io.Copy(w, f)
}

func (ms *mailSystem) handleQuarantineState(state string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := r.URL.Query().Get("id")
		meta, err := ms.store.SetState(id, state)
		if err != nil {
			writeErr(w, mailErr(id, err))
			return
		}
		ms.replicator().Kick()
		writeJSON(w, http.StatusOK, quarantineMessage(meta))
	}
}

// mailErr maps the mail store's errors to the API's.
func mailErr(id string, err error) error {
	switch {
	case errors.Is(err, mailstore.ErrNotFound), errors.Is(err, mailstore.ErrInvalid):
		return &cluster.RemoteError{Status: http.StatusNotFound, E: api.Error{Code: api.CodeNotFound,
			Message: fmt.Sprintf("no message %q in the quarantine", id), Hint: "pmgcm quarantine list shows the messages"}}
	case errors.Is(err, mailstore.ErrDeleted):
		return &cluster.RemoteError{Status: http.StatusConflict, E: api.Error{Code: api.CodeConflict,
			Message: fmt.Sprintf("message %s was deleted", id)}}
	case errors.Is(err, mailstore.ErrBusy):
		return &cluster.RemoteError{Status: http.StatusServiceUnavailable, E: api.Error{Code: api.CodeUnavailable,
			Message: fmt.Sprintf("message %s is being received from another node right now", id), Hint: "try again in a moment"}}
	case errors.Is(err, mailstore.ErrCorrupt), errors.Is(err, mailstore.ErrChecksum):
		return &cluster.RemoteError{Status: http.StatusServiceUnavailable, E: api.Error{Code: api.CodeUnavailable,
			Message: fmt.Sprintf("message %s: the body on this node failed its checksum; it is being fetched again from another node", id),
			Hint:    "try again in a moment, or on another node"}}
	}
	return err
}
