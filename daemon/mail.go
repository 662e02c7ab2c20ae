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

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/cluster"
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
	m := &mailSystem{store: store}
	d.mail = m
	d.purgeMail() // before replication: never fetch what retention already dropped
	var ln net.Listener
	m.srv, ln = d.limits.channelServer(transport.ChanMail, mailrepl.Handler(store), d.mux.Listener(transport.ChanMail))
	d.bg.Add(1)
	go func() {
		defer d.bg.Done()
		_ = m.srv.Serve(ln)
	}()
	if err := d.startReplicator(); err != nil {
		return err
	}
	// A node in maintenance keeps SMTP intake closed (maintenance.go).
	d.ops.setMaintenanceHook(d.maint.maintenanceReason)
	if err := d.maint.setSMTP(!d.maint.maintenanceOn()); err != nil {
		return err
	}
	d.bg.Add(2)
	go d.mailHousekeeping()
	go d.diskW.run()
	return nil
}

func (d *Daemon) startReplicator() error {
	cfg := mailrepl.DefaultConfig()
	cfg.Store, cfg.Peers = d.mail.store, d.mailPeers
	cfg.Client = d.mux.HTTPClient(transport.ChanMail)
	cfg.Logger = d.logger.Named("mailrepl")
	r, err := mailrepl.New(cfg)
	if err != nil {
		return err
	}
	r.Start()
	d.mail.mu.Lock()
	d.mail.repl = r
	d.mail.mu.Unlock()
	return nil
}

// replicator returns the running replicator.
func (d *Daemon) replicator() *mailrepl.Replicator {
	d.mail.mu.Lock()
	defer d.mail.mu.Unlock()
	return d.mail.repl
}

// mailPeers are the other members of the current epoch: a removed or fenced node
// exchanges no mail until it is back.
func (d *Daemon) mailPeers() []mailrepl.Peer {
	if d.checkServing() != nil {
		return nil
	}
	me := d.self().CID
	var out []mailrepl.Peer
	for _, m := range d.members.active() {
		if m.CID != me {
			out = append(out, mailrepl.Peer{CID: m.CID, Addr: memberAddr(m)})
		}
	}
	return out
}

// wipeMail empties the mail store when the node joins a cluster (its data is replaced by
// the cluster's); replication starts over.
func (d *Daemon) wipeMail() error {
	if r := d.replicator(); r != nil {
		_ = r.Close()
	}
	if err := d.mail.store.Wipe(); err != nil {
		return fmt.Errorf("empty the mail store: %w", err)
	}
	return d.startReplicator()
}

// drainMail stops the SMTP intake for a planned stop: it stops accepting connections at
// once and lets the transactions in flight finish within SMTPDrainTimeout, while the
// store is still open (closeMail closes it after).
func (d *Daemon) drainMail() error {
	s := d.mail.smtpServer()
	if s == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), d.cfg.SMTPDrainTimeout)
	defer cancel()
	return s.Drain(ctx)
}

// closeMail stops intake first, then replication, then the store.
func (d *Daemon) closeMail() error {
	m := d.mail
	if m == nil {
		return nil
	}
	var errs []error
	if s := d.maint.takeSMTP(); s != nil {
		errs = append(errs, s.Close())
	}
	if r := d.replicator(); r != nil {
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
func (d *Daemon) mailHousekeeping() {
	defer d.bg.Done()
	ctx, cancel := d.stopContext()
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
			d.purgeMail()
		case <-scrub.C:
			if bad, err := d.mail.store.Scrub(ctx); err != nil && ctx.Err() == nil {
				d.logger.Warn("mail scrub", "error", err)
			} else if len(bad) > 0 {
				d.logger.Warn("corrupt mail bodies found; fetching them again from peers", "ids", bad)
				d.replicator().Kick()
			}
		}
	}
}

// purgeMail drops messages older than mail/retention_days (none when unset or 0), then
// compacts the mail event log.
func (d *Daemon) purgeMail() {
	v, ok := d.intake.setting(keyRetentionDays)
	if !ok {
		return
	}
	days, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || days <= 0 {
		if err != nil {
			d.logger.Warn("ignoring a bad retention setting", "key", keyRetentionDays, "value", v)
		}
		return
	}
	n, err := d.mail.store.Purge(time.Now().Add(-time.Duration(days) * 24 * time.Hour))
	if err != nil {
		d.logger.Warn("mail retention", "error", err)
		return
	}
	if n > 0 {
		d.logger.Info("mail retention purged messages", "count", n, "days", days)
	}
	// The events of purged messages are needed by no node any more: drop them, so that
	// the index does not grow with every message ever received.
	if n, err := d.mail.store.Compact(); err != nil {
		d.logger.Warn("mail event log compaction", "error", err)
	} else if n > 0 {
		d.logger.Info("mail event log compacted", "events", n, "floors", d.mail.store.Floors())
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
func (d *Daemon) mailStatus() *api.MailStatus {
	if d.mail == nil {
		return nil
	}
	msgs, bytes := d.mail.store.Stats()
	st := &api.MailStatus{Messages: msgs, Bytes: bytes}
	if r := d.replicator(); r != nil {
		st.BacklogMessages, st.BacklogBytes = r.Backlog()
		st.BacklogKnown = r.BacklogKnown()
	}
	return st
}

func quarantineMessage(m mailstore.Meta) api.QuarantineMessage {
	return api.QuarantineMessage{ID: m.ID, OriginCID: m.Origin, From: m.From, To: m.To, Subject: m.Subject,
		Size: m.Size, SHA256: m.SHA256, State: m.State, Received: m.Received}
}

func (d *Daemon) handleQuarantineList(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	list, err := d.mail.store.List(mailstore.Filter{From: q.Get("from"), To: q.Get("to"), State: q.Get("state")})
	if err != nil {
		writeErr(w, err)
		return
	}
	// Streamed (issue 16): the bytes are those of the []api.QuarantineMessage encoded whole.
	streamJSON(w, "[", "]", len(list), func(i int) any { return quarantineMessage(list[i]) })
}

func (d *Daemon) handleQuarantineShow(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get("id")
	// Check the body before serving it: a corrupt one is moved aside, marked missing and
	// fetched again from a peer, never shown.
	if err := d.mail.store.Verify(id); err != nil {
		if errors.Is(err, mailstore.ErrCorrupt) || errors.Is(err, mailstore.ErrChecksum) {
			d.logger.Warn("corrupt mail body found; fetching it again from a peer", "id", id)
			d.replicator().Kick()
		}
		writeErr(w, mailErr(id, err))
		return
	}
	f, meta, err := d.mail.store.OpenBody(id)
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

func (d *Daemon) handleQuarantineState(state string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := r.URL.Query().Get("id")
		meta, err := d.mail.store.SetState(id, state)
		if err != nil {
			writeErr(w, mailErr(id, err))
			return
		}
		d.replicator().Kick()
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
