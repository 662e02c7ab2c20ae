package daemon

import (
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/fsm"
	"github.com/pmgcm/pmgcm/raftnode"
)

// health owns the health checks of /health/mail and /health/cluster: why this node does
// not take mail, and why it is not an active member with a known master.
type health struct {
	// stat is this node's view of the cluster (status.go).
	stat  *statusReporter
	ops   *opsState
	drain *stopDrain
	// dir holds the mail store, probed for writes.
	dir       *dataDir
	dataDir   string
	smtpPort  int
	heartbeat time.Duration
	// mail is the quarantine (Daemon.mail; made after the checks).
	mail  func() *mailSystem
	trust *peerTrust
	// host is what the checks read of the rest of the daemon.
	host healthHost
	// fsm says whether a spilled configuration value could not be read back.
	fsm *fsm.FSM
}

// healthHost is what the health checks read of the daemon.
type healthHost interface {
	checkServing() error
	rn() *raftnode.Node
}

// newHealth returns the health checks of d, whose operator tools and drain are made.
func newHealth(d *Daemon) *health {
	return &health{
		ops: d.ops, drain: d.drain, dir: d.dir, dataDir: d.cfg.DataDir, smtpPort: d.cfg.SMTPPort,
		heartbeat: d.cfg.Raft.HeartbeatTimeout, mail: d.mailSys, trust: d.trust, stat: d.stat, host: d,
		fsm: d.fsm,
	}
}

// routes serves the health checks on the metrics listener (--metrics-addr), for
// load balancers (HAProxy option httpchk, keepalived vrrp_script) and monitoring.
func (h *health) routes(mux *http.ServeMux) {
	mux.HandleFunc("GET "+api.PathHealthMail, func(w http.ResponseWriter, r *http.Request) {
		writeHealth(w, h.mailHealth())
	})
	mux.HandleFunc("GET "+api.PathHealthCluster, func(w http.ResponseWriter, r *http.Request) {
		writeHealth(w, h.clusterHealth())
	})
}

func writeHealth(w http.ResponseWriter, reasons []string) {
	h := api.Health{OK: len(reasons) == 0, Reasons: reasons}
	if h.Reasons == nil {
		h.Reasons = []string{}
	}
	code := http.StatusOK
	if !h.OK {
		code = http.StatusServiceUnavailable
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, code, h)
}

// mailHealth says why this node does not take mail now (none: it does). It does not
// depend on the Raft quorum, as mail intake does not.
func (h *health) mailHealth() []string {
	var reasons []string
	if h.drain.stopping() {
		reasons = append(reasons, "shutting down: SMTP intake is draining")
	}
	mail := h.mail()
	srv := mail.smtpServer()
	switch {
	case h.smtpPort == 0:
		reasons = append(reasons, "SMTP intake is off (--smtp-port 0)")
	case srv == nil || !srv.Listening():
		reasons = append(reasons, fmt.Sprintf("SMTP listener on port %d is not accepting connections", h.smtpPort))
	}
	if on, why := h.ops.inMaintenance(); on {
		reasons = append(reasons, "in maintenance: "+why)
	}
	if err := h.host.checkServing(); err != nil {
		reasons = append(reasons, err.Error())
	}
	reasons = append(reasons, h.diskReasons()...)
	if mail != nil {
		if err := probeWritable(h.dir.file("mail")); err != nil {
			reasons = append(reasons, "mail store is not writable: "+err.Error())
		}
	}
	return reasons
}

// diskReasons says what the disk guard holds back, if anything.
func (h *health) diskReasons() []string {
	g := h.ops.disk
	s := g.state.Load()
	switch {
	case s == nil:
		return nil
	case s.Err != nil:
		return []string{"disk guard: " + s.Err.Error()}
	case s.ReadOnly:
		return []string{fmt.Sprintf("the filesystem of %s is mounted read-only", h.dataDir)}
	case s.active():
		return []string{"disk guard: " + g.describe(s) + ": SMTP answers 452"}
	}
	return nil
}

// probeWritable creates, writes and removes a small file in dir: the mail store takes
// mail only where that works. No fsync: it checks permissions and a read-only mount, not
// the disk's durability.
func probeWritable(dir string) error {
	f, err := os.CreateTemp(dir, ".health-*")
	if err != nil {
		return err
	}
	_, werr := f.Write([]byte("ok"))
	cerr := f.Close()
	rerr := os.Remove(f.Name())
	for _, e := range []error{werr, cerr, rerr} {
		if e != nil {
			return e
		}
	}
	return nil
}

// clusterHealth says why this node is not an active member with a known master (none:
// it is). It reads only this node's own state, without asking the other nodes.
func (h *health) clusterHealth() []string {
	var reasons []string
	if h.drain.stopping() {
		return []string{"shutting down"}
	}
	if err := h.host.checkServing(); err != nil {
		return []string{err.Error()}
	}
	if h.trust.knownCluster() == "" {
		return []string{"not in a cluster: create one with pmgcm create, or join one with pmgcm join <master_ip>"}
	}
	n := h.host.rn()
	st := n.Stats()
	_, leaderID := n.Leader()
	switch {
	case leaderID == "":
		reasons = append(reasons, "no master known: configuration writes are unavailable: "+h.stat.quorumSummary())
	case st.State != "Leader" && (st.LastContact <= 0 || st.LastContact > h.heartbeat):
		since := "never"
		if lc := st.LastContact; lc > 0 {
			since = lc.Round(time.Millisecond).String() + " ago"
		}
		reasons = append(reasons, fmt.Sprintf("no recent contact with the master (cid %s): last %s", leaderID, since))
	}
	if st.AppliedIndex+catchUpSlack < st.CommitIndex {
		reasons = append(reasons, fmt.Sprintf("state S: syncing the configuration, applied index %d of %d", st.AppliedIndex, st.CommitIndex))
	}
	if ms := h.mail().mailStatus(); ms != nil {
		switch {
		case !ms.BacklogKnown:
			reasons = append(reasons, "state S: not every node has told yet what mail it has")
		case ms.BacklogMessages > 0 || ms.BacklogBytes > 0:
			reasons = append(reasons, fmt.Sprintf("state S: receiving mail from the other nodes (%d messages, %s to go)", ms.BacklogMessages, formatBytes(uint64(ms.BacklogBytes))))
		}
	}
	if on, why := h.ops.inMaintenance(); on {
		reasons = append(reasons, "state M: in maintenance: "+why)
	}
	if f, ok, _ := h.fsm.SpillFault(); ok {
		reasons = append(reasons, spillFaultAdvice(f))
	}
	return reasons
}
