package daemon

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pmgcm/pmgcm/raftnode"
	"github.com/pmgcm/pmgcm/smtpd"
)

// metrics are the daemon's Prometheus metrics, in a registry of their own (no global
// state): served on --metrics-addr, off by default. The event metrics (counters and
// histograms) are updated where the events happen; the state metrics (Raft, replication,
// certificate) are read live at each scrape by the collector below.
type metrics struct {
	reg *prometheus.Registry

	applyLatency prometheus.Histogram
	configOps    *prometheus.CounterVec
	mailAccepted prometheus.Counter
	mailRejected *prometheus.CounterVec
	operations   *prometheus.HistogramVec
}

// Label values of pmgcm_config_operations_total's "op".
const (
	opRead  = "read"
	opWrite = "write"
)

func newMetrics(d *Daemon) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		applyLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "pmgcm_raft_apply_duration_seconds",
			Help:    "Time from proposing a command on the master until it is committed and applied there.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		configOps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pmgcm_config_operations_total",
			Help: "Configuration reads and writes served on this node's control socket, by operation (read, write) and result (ok or the API error code).",
		}, []string{"op", "result"}),
		mailAccepted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pmgcm_mail_accepted_total",
			Help: "Messages accepted by SMTP intake on this node (answered 250).",
		}),
		mailRejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pmgcm_mail_rejected_total",
			Help: "SMTP intake refusals on this node, by reason: a refused recipient (relay_denied, no_relay_domains) counts once per RCPT, a refused message (too_big, line_too_long, store_failed, transfer_failed, shutting_down) once. SMTP syntax errors are not counted.",
		}, []string{"reason"}),
		operations: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pmgcm_operation_duration_seconds",
			Help:    "Duration of the cluster operations run on this node (join, promote, sync, update_fingerprints), by result (ok, error); the count is the number of operations.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 14),
		}, []string{"op", "result"}),
	}
	m.reg.MustRegister(m.applyLatency, m.configOps, m.mailAccepted, m.mailRejected, m.operations,
		stateCollector{d}, diskCollector{d}, opsCollector{d},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.reg.MustRegister(backupCollectors(d)...)
	// Make the series exist from the start, so a scrape shows zeros instead of nothing.
	for _, op := range []string{opRead, opWrite} {
		m.configOps.WithLabelValues(op, "ok")
	}
	for _, o := range smtpd.Outcomes {
		if o != smtpd.Accepted {
			m.mailRejected.WithLabelValues(string(o))
		}
	}
	return m
}

// observeMail counts one outcome of the SMTP intake (smtpd.Config.Observe).
func (m *metrics) observeMail(o smtpd.Outcome) {
	if o == smtpd.Accepted {
		m.mailAccepted.Inc()
		return
	}
	m.mailRejected.WithLabelValues(string(o)).Inc()
}

// observeOp records one cluster operation that started at start and ended with err.
func (m *metrics) observeOp(op string, start time.Time, err error) {
	if m == nil {
		return
	}
	m.operations.WithLabelValues(op, resultOf(err)).Observe(time.Since(start).Seconds())
}

func resultOf(err error) string {
	if err != nil {
		return "error"
	}
	return "ok"
}

// countConfig wraps a configuration handler to count its answers by result.
func (m *metrics) countConfig(op string, h http.HandlerFunc) http.HandlerFunc {
	if m == nil {
		return h
	}
	ok := m.configOps.WithLabelValues(op, "ok") // the common case, without a label lookup each time
	return func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		h(sw, r)
		if res := sw.result(); res == "ok" {
			ok.Inc()
		} else {
			m.configOps.WithLabelValues(op, res).Inc()
		}
	}
}

// statusWriter remembers the status code and api error code of an answer.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) result() string {
	switch {
	case w.status < 300:
		return "ok"
	case w.status == http.StatusNotFound:
		return "not_found"
	case w.status == http.StatusConflict:
		return "conflict"
	case w.status == http.StatusServiceUnavailable:
		return "unavailable"
	case w.status < 500:
		return "bad_request"
	}
	return "error"
}

// openMetrics serves the metrics on --metrics-addr, if set.
func (d *Daemon) openMetrics() error {
	if d.cfg.MetricsAddr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", d.cfg.MetricsAddr)
	if err != nil {
		return fmt.Errorf("metrics listener on %s: %w: choose another --metrics-addr", d.cfg.MetricsAddr, err)
	}
	mux := http.NewServeMux()
	d.health.routes(mux)
	mux.Handle("GET /metrics", promhttp.HandlerFor(d.metrics.reg, promhttp.HandlerOpts{
		ErrorLog: hclogAdapter{d}, ErrorHandling: promhttp.ContinueOnError,
	}))
	srv, ln := d.limits.metricsServer(mux, ln)
	d.servers = append(d.servers, srv)
	d.bg.Add(1)
	go func() {
		defer d.bg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.logger.Error("metrics server stopped", "error", err)
		}
	}()
	d.logger.Info("serving metrics", "address", ln.Addr().String())
	return nil
}

// hclogAdapter passes promhttp's errors to the daemon's log.
type hclogAdapter struct{ d *Daemon }

func (a hclogAdapter) Println(v ...any) { a.d.logger.Warn("metrics", "error", fmt.Sprint(v...)) }

// stateCollector reads the node's state at each scrape.
type stateCollector struct{ d *Daemon }

var (
	descRaftState = prometheus.NewDesc("pmgcm_raft_state",
		"Raft state of this node: 1 for the state it is in (Leader, Follower, Candidate, Shutdown), 0 for the others.", []string{"state"}, nil)
	descTerm = prometheus.NewDesc("pmgcm_raft_term",
		"Current Raft term.", nil, nil)
	descCommit = prometheus.NewDesc("pmgcm_raft_commit_index",
		"Raft commit index known to this node.", nil, nil)
	descApplied = prometheus.NewDesc("pmgcm_raft_applied_index",
		"Raft index applied on this node.", nil, nil)
	descLastIndex = prometheus.NewDesc("pmgcm_raft_last_index",
		"Last index of this node's Raft log.", nil, nil)
	descLeaderChanges = prometheus.NewDesc("pmgcm_raft_leader_changes_total",
		"Times this node saw a new master since the daemon started (or joined).", nil, nil)
	descIsLeader = prometheus.NewDesc("pmgcm_raft_leader",
		"1 when this node is the master.", nil, nil)
	descLastContact = prometheus.NewDesc("pmgcm_raft_last_contact_seconds",
		"On a follower: time since it last heard from the master (the series names the master). "+
			"On the master: per peer, 0 while the peer answers heartbeats (Raft gives no finer time), "+
			"else the time since it last answered.", []string{"cid", "address"}, nil)
	descBacklogMsgs = prometheus.NewDesc("pmgcm_mail_replication_backlog_messages",
		"Mail events and bodies this node still has to receive from the other nodes.", nil, nil)
	descBacklogBytes = prometheus.NewDesc("pmgcm_mail_replication_backlog_bytes",
		"Bytes of mail bodies this node still has to receive from the other nodes.", nil, nil)
	descPeerLag = prometheus.NewDesc("pmgcm_mail_replication_peer_lag_events",
		"Per reachable peer: mail events it has that this node has not applied yet.", []string{"cid", "address"}, nil)
	descConfigValues = prometheus.NewDesc("pmgcm_config_value_bytes",
		"Bytes of configuration values on this node, by where they are kept: on disk in DATA/fsm-values, "+
			"or in memory (values under 64 bytes, and any the disk could not take).", []string{"place"}, nil)
	descSpillFile = prometheus.NewDesc("pmgcm_config_spill_file_bytes",
		"Size of the live file under DATA/fsm-values: the values on disk plus those overwritten or deleted since it was last compacted.", nil, nil)
	descSpillReadErrors = prometheus.NewDesc("pmgcm_config_value_read_errors_total",
		"Reads of configuration values from DATA/fsm-values that failed since the daemon started (a disk error: "+
			"snapshots fail until they read again; a restart of pmgclusterd rebuilds the files).", nil, nil)
	descSpillFault = prometheus.NewDesc("pmgcm_config_value_unreadable",
		"1 while a configuration value could not be read back from DATA/fsm-values and no snapshot has read every value since.", nil, nil)
	descCertExpiry = prometheus.NewDesc("pmgcm_node_certificate_expiry_timestamp_seconds",
		"When this node's certificate expires (Unix time); renew with pmgcm update-fingerprints.", nil, nil)
)

// Describe sends the descriptors of the state metrics.
func (c stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRaftState, descTerm, descCommit, descApplied, descLastIndex,
		descLeaderChanges, descIsLeader, descLastContact, descBacklogMsgs, descBacklogBytes, descPeerLag, descCertExpiry,
		descConfigValues, descSpillFile, descSpillReadErrors, descSpillFault} {
		ch <- d
	}
}

// Collect reads the state metrics.
func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	d := c.d
	gauge := func(desc *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, v, labels...)
	}
	if id := d.mux.Identity(); id != nil && id.Leaf != nil {
		gauge(descCertExpiry, float64(id.Leaf.NotAfter.Unix()))
	}
	d.mailSys().collectMail(gauge) // a peer's report may scrape before openMail
	sp := d.fsm.SpillStats()
	gauge(descConfigValues, float64(sp.OnDisk), "disk")
	gauge(descConfigValues, float64(sp.InMemory), "memory")
	gauge(descSpillFile, float64(sp.FileBytes))
	_, faulty, failedReads := d.fsm.SpillFault()
	ch <- prometheus.MustNewConstMetric(descSpillReadErrors, prometheus.CounterValue, float64(failedReads))
	unreadable := 0.0
	if faulty {
		unreadable = 1
	}
	gauge(descSpillFault, unreadable)
	n := d.rn()
	if n == nil {
		return
	}
	st := n.Stats()
	for _, s := range []string{"Leader", "Follower", "Candidate", "Shutdown"} {
		v := 0.0
		if st.State == s {
			v = 1
		}
		gauge(descRaftState, v, s)
	}
	leader := 0.0
	if st.State == "Leader" {
		leader = 1
	}
	gauge(descIsLeader, leader)
	gauge(descTerm, float64(st.Term))
	gauge(descCommit, float64(st.CommitIndex))
	gauge(descApplied, float64(st.AppliedIndex))
	gauge(descLastIndex, float64(st.LastIndex))
	ch <- prometheus.MustNewConstMetric(descLeaderChanges, prometheus.CounterValue, float64(n.LeaderChanges()))
	addr, id := n.Leader()
	switch {
	case st.State == "Leader":
		failing := n.FailingPeers()
		cfg, err := n.Configuration()
		if err != nil {
			return
		}
		for _, s := range cfg.Servers {
			if s.ID == raftnode.ServerID(d.self().CID) {
				continue
			}
			v := 0.0
			if t, ok := failing[s.ID]; ok && !t.IsZero() {
				v = time.Since(t).Seconds()
			}
			gauge(descLastContact, v, string(s.ID), string(s.Address))
		}
	case id != "" && st.LastContact > 0:
		gauge(descLastContact, st.LastContact.Seconds(), string(id), string(addr))
	}
}

// collectMail reads the replication backlog, in total and per peer.
func (ms *mailSystem) collectMail(gauge func(*prometheus.Desc, float64, ...string)) {
	if ms == nil {
		return
	}
	r := ms.replicator()
	if r == nil {
		return
	}
	msgs, bytes := r.Backlog()
	gauge(descBacklogMsgs, float64(msgs))
	gauge(descBacklogBytes, float64(bytes))
	for p, n := range r.PeerBacklog() {
		gauge(descPeerLag, float64(n), strconv.FormatUint(p.CID, 10), p.Addr)
	}
}
