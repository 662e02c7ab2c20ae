package daemon

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"runtime/debug"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/cluster"
	"github.com/pmgcm/pmgcm/fsm"
	"github.com/pmgcm/pmgcm/internal/logring"
	"github.com/pmgcm/pmgcm/raftnode"
	"github.com/pmgcm/pmgcm/transport"
)

// rpcReport is the cluster RPC path that answers GET with this node's nodeReport. A
// node of an older version answers 404: the bundle then says so for that node.
const rpcReport = cluster.PathReport

// Limits of the diagnostics gathering.
const (
	// reportNodeTimeout bounds the wait for one node's report.
	reportNodeTimeout = 5 * time.Second
	// maxNodeReport bounds a node's answer: the log ring (2 MiB at most) and the
	// metrics with room to spare.
	maxNodeReport = 16 << 20
)

// NotAvailableOlder is what the bundle records for a node whose version has no report.
const notAvailableOlder = "not available (older version)"

// nodeReport is one node's part of a diagnostics bundle, as the node itself reads it.
// Every text in it has gone through the node's redactor.
type nodeReport struct {
	CID         uint64       `json:"cid"`
	Name        string       `json:"name"`
	IP          string       `json:"ip"`
	CollectedAt time.Time    `json:"collected_at"`
	Build       buildVersion `json:"build"`
	// ProtocolVersion and StateFormat are the node-to-node protocol and state encoding.
	ProtocolVersion int         `json:"protocol_version"`
	StateFormat     int         `json:"state_format"`
	Raft            raftReport  `json:"raft"`
	Node            api.Node    `json:"node"`
	Metrics         string      `json:"metrics"`
	Settings        string      `json:"settings"`
	Log             string      `json:"log"`
	LogLines        int         `json:"log_lines"`
	LogDropped      uint64      `json:"log_dropped"`
	Members         []memberRow `json:"members"`
}

// buildVersion is what the binary knows of its build.
type buildVersion struct {
	Module   string `json:"module"`
	Version  string `json:"version"`
	Revision string `json:"revision,omitempty"`
	Time     string `json:"time,omitempty"`
	Modified bool   `json:"modified,omitempty"`
	Go       string `json:"go"`
}

// raftReport is the node's Raft state.
type raftReport struct {
	Stats         raftnode.Stats `json:"stats"`
	LeaderID      string         `json:"leader_id"`
	LeaderAddress string         `json:"leader_address"`
	Configuration []raftServer   `json:"configuration"`
	Error         string         `json:"error,omitempty"`
}

type raftServer struct {
	ID       string `json:"id"`
	Address  string `json:"address"`
	Suffrage string `json:"suffrage"`
}

// memberRow is a member as this node's state machine has it (no secrets in it).
type memberRow struct {
	CID         uint64 `json:"cid"`
	Name        string `json:"name"`
	Address     string `json:"address"`
	Suffrage    string `json:"suffrage"`
	Epoch       uint64 `json:"epoch"`
	Fingerprint string `json:"fingerprint"`
}

func readBuild() buildVersion {
	b := buildVersion{Go: runtime.Version()}
	if bi, ok := debug.ReadBuildInfo(); ok {
		b.Module, b.Version = bi.Main.Path, bi.Main.Version
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				b.Revision = s.Value
			case "vcs.time":
				b.Time = s.Value
			case "vcs.modified":
				b.Modified = s.Value == "true"
			}
		}
	}
	return b
}

// reporter owns the diagnostics bundle (pmgcm report): this node's report with its
// secrets redacted, the reports it gathers from the other members, and the archive.
type reporter struct {
	// stat is this node's view of the cluster (status.go).
	stat   *statusReporter
	fsm    *fsm.FSM
	logger hclog.Logger
	// dir holds this node's private key, which the redactor leaves out.
	dir *dataDir
	mux *transport.Mux
	// reg is the registry of this node's metrics (Daemon.metrics).
	reg *prometheus.Registry
	// peers is the membership this node trusts at the handshake (Daemon.peers).
	peers           *atomic.Pointer[peerCache]
	protocolVersion int
	settings        []byte
	ring            *logring.Ring
	// host is what the report needs of the rest of the daemon.
	host reportHost
}

// reportHost is what the diagnostics bundle needs of the daemon.
type reportHost interface {
	self() nodeFile
	rn() *raftnode.Node
	checkServing() error
}

// newReporter returns the reporter of d, whose data directory, fsm, mux and metrics are made.
func newReporter(d *Daemon) *reporter {
	return &reporter{
		fsm: d.fsm, logger: d.logger, dir: d.dir, mux: d.mux, reg: d.metrics.reg, peers: &d.peers,
		protocolVersion: d.cfg.ProtocolVersion, settings: d.cfg.Settings, ring: d.cfg.LogRing, stat: d.stat, host: d,
	}
}

// withReport serves this node's report on the cluster RPC channel, beside the paths
// that rpc serves.
func (rp *reporter) withReport(rpc http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+rpcReport, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, rp.localReport(r.Context()))
	})
	mux.Handle("/", rpc)
	return mux
}

// localReport reads this node's report, with its secrets redacted.
func (rp *reporter) localReport(ctx context.Context) nodeReport {
	me := rp.host.self()
	rep := nodeReport{
		CID: me.CID, Name: me.Name, IP: me.IP, CollectedAt: time.Now().UTC(), Build: readBuild(),
		ProtocolVersion: rp.protocolVersion, StateFormat: StateFormat,
		Node: rp.stat.localNode(), Settings: string(rp.settings),
	}
	if n := rp.host.rn(); n != nil {
		rep.Raft.Stats = n.Stats()
		addr, id := n.Leader()
		rep.Raft.LeaderID, rep.Raft.LeaderAddress = string(id), string(addr)
		if cfg, err := n.Configuration(); err != nil {
			rep.Raft.Error = err.Error()
		} else {
			for _, s := range cfg.Servers {
				rep.Raft.Configuration = append(rep.Raft.Configuration, raftServer{ID: string(s.ID), Address: string(s.Address), Suffrage: s.Suffrage.String()})
			}
		}
	}
	for _, m := range rp.fsm.Members() {
		rep.Members = append(rep.Members, memberRow{CID: m.CID, Name: m.Name, Address: net.JoinHostPort(m.IP, strconv.Itoa(m.Port)),
			Suffrage: string(m.Suffrage), Epoch: m.Epoch, Fingerprint: m.Fingerprint})
	}
	rep.Metrics = rp.metricsText(ctx)
	if ring := rp.ring; ring != nil {
		rep.Log, rep.LogLines, rep.LogDropped = string(ring.Bytes()), ring.Len(), ring.Dropped()
	} else {
		rep.Log = "(this daemon keeps no log ring: it was not started by pmgclusterd)\n"
	}
	red := rp.redactor()
	rep.Metrics, rep.Settings, rep.Log = red.text(rep.Metrics), red.text(rep.Settings), red.text(rep.Log)
	return rep
}

// metricsText is the Prometheus text exposition of this node's metrics.
func (rp *reporter) metricsText(ctx context.Context) string {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "/metrics", nil)
	if err != nil {
		return err.Error()
	}
	var buf bufferResponse
	promhttp.HandlerFor(rp.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}).ServeHTTP(&buf, req)
	return buf.body.String()
}

// bufferResponse is an http.ResponseWriter into memory.
type bufferResponse struct {
	h    http.Header
	body bytes.Buffer
}

func (b *bufferResponse) Header() http.Header {
	if b.h == nil {
		b.h = http.Header{}
	}
	return b.h
}
func (b *bufferResponse) Write(p []byte) (int, error) { return b.body.Write(p) }
func (b *bufferResponse) WriteHeader(int)             {}

// remoteReport asks member m for its report. err is set when there is none; older is
// true when the member's version does not know the request.
func (rp *reporter) remoteReport(ctx context.Context, hc *http.Client, addr string) (rep nodeReport, older bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, reportNodeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+rpcReport, nil)
	if err != nil {
		return rep, false, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return rep, false, fmt.Errorf("cannot reach the node at %s: %v", addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return rep, true, fmt.Errorf("%s: the node at %s does not serve %s", notAvailableOlder, addr, rpcReport)
	}
	if resp.StatusCode != http.StatusOK {
		return rep, false, fmt.Errorf("the node at %s answered %s", addr, resp.Status)
	}
	return decodeNodeReport(io.LimitReader(resp.Body, maxNodeReport+1))
}

// decodeNodeReport reads a node's answer, at most maxNodeReport bytes of it.
func decodeNodeReport(r io.Reader) (nodeReport, bool, error) {
	var rep nodeReport
	b, err := io.ReadAll(io.LimitReader(r, maxNodeReport+1))
	if err != nil {
		return rep, false, fmt.Errorf("reading the report: %w", err)
	}
	if len(b) > maxNodeReport {
		return rep, false, fmt.Errorf("the report is over %d bytes", maxNodeReport)
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		return rep, false, fmt.Errorf("decoding the report: %w", err)
	}
	return rep, false, nil
}

// gathered is one member's part of the bundle: its report, or why there is none.
type gathered struct {
	cid  uint64
	name string
	rep  *nodeReport
	why  string
}

// gatherReports asks every member (this node included) for its report, in parallel.
func (rp *reporter) gatherReports(ctx context.Context) []gathered {
	me := rp.host.self()
	members := rp.fsm.Members()
	var epoch uint64
	if cl := rp.fsm.Cluster(); cl != nil {
		epoch = cl.Epoch
	} else if p := rp.peers.Load(); p != nil && p.ClusterID != "" {
		members, epoch = p.Members, p.Epoch
	}
	if len(members) == 0 {
		members = []fsm.Member{{CID: me.CID, Name: me.Name, IP: me.IP, Port: me.Port}}
	}
	out := make([]gathered, len(members))
	// A client of its own: reports are rare and large, and must not hold the pooled
	// connections of forwarding.
	hc := rp.mux.HTTPClient(transport.ChanRPC)
	defer hc.CloseIdleConnections()
	var wg sync.WaitGroup
	for i, m := range members {
		out[i] = gathered{cid: m.CID, name: m.Name}
		switch {
		case m.CID == me.CID:
			rep := rp.localReport(ctx)
			out[i].rep = &rep
		case rp.host.checkServing() != nil:
			out[i].why = "not asked: this node takes no part in the cluster now (" + rp.host.checkServing().Error() + ")"
		case m.Fenced(epoch):
			out[i].why = fmt.Sprintf("not asked: fenced (left in epoch %d by a forced promotion)", m.Epoch)
		default:
			wg.Add(1)
			go func() {
				defer wg.Done()
				rep, _, err := rp.remoteReport(ctx, hc, net.JoinHostPort(m.IP, strconv.Itoa(m.Port)))
				if err != nil {
					out[i].why = err.Error()
					return
				}
				out[i].rep = &rep
			}()
		}
	}
	wg.Wait()
	sort.Slice(out, func(a, b int) bool { return out[a].cid < out[b].cid })
	return out
}

// handleReport answers api.PathReport with the bundle, a tar.gz.
func (rp *reporter) handleReport(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	at := time.Now().UTC()
	status := rp.stat.status(ctx)
	parts := rp.gatherReports(ctx)
	red := rp.redactor()
	w.Header().Set("Content-Type", "application/gzip")
	w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", "pmgcm-report-"+at.Format("20060102T150405Z")+".tar.gz"))
	w.WriteHeader(http.StatusOK)
	if err := writeBundle(w, at, status, parts, red); err != nil {
		// The answer is under way: the CLI sees a truncated archive, which does not verify.
		rp.logger.Warn("diagnostics bundle cut short", "error", err)
	}
}

// writeBundle writes the tar.gz. Every file's text goes through red.
func writeBundle(w io.Writer, at time.Time, status api.Status, parts []gathered, red *redactor) error {
	zw := gzip.NewWriter(w)
	tw := tar.NewWriter(zw)
	root := "pmgcm-report-" + at.Format("20060102T150405Z") + "/"
	add := func(name string, data []byte) error {
		data = red.bytes(data)
		hdr := &tar.Header{Name: root + name, Mode: 0o644, Size: int64(len(data)), ModTime: at, Typeflag: tar.TypeReg}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	var readme bytes.Buffer
	fmt.Fprintf(&readme, "pmgcm diagnostics bundle, collected %s.\n\n", at.Format(time.RFC3339))
	readme.WriteString("status.json              pmgcm status -o json, as the collecting node saw it\n" +
		"nodes/NAME-cidN/report.json   build, protocol, Raft state and configuration, the node's status row, members\n" +
		"nodes/NAME-cidN/metrics.txt   the node's Prometheus metrics\n" +
		"nodes/NAME-cidN/settings.toml the settings in effect (pmgclusterd --print-config)\n" +
		"nodes/NAME-cidN/log.txt       the daemon's most recent log lines (in memory, bounded)\n" +
		"nodes/NAME-cidN/unavailable.txt  why a node's part is missing\n\n" +
		"No secret is in it: private keys, the CA key, the join token and its salt are left out.\n\nNodes:\n")
	for _, p := range parts {
		state := "collected"
		if p.rep == nil {
			state = p.why
		}
		fmt.Fprintf(&readme, "  cid %d %s: %s\n", p.cid, p.name, state)
	}
	if err := add("README.txt", readme.Bytes()); err != nil {
		return err
	}
	sb, err := json.MarshalIndent(status, "", "  ")
	if err != nil {
		return err
	}
	if err := add("status.json", append(sb, '\n')); err != nil {
		return err
	}
	for _, p := range parts {
		dir := fmt.Sprintf("nodes/%s-cid%d/", safeName(p.name), p.cid)
		if p.rep == nil {
			if err := add(dir+"unavailable.txt", []byte(p.why+"\n")); err != nil {
				return err
			}
			continue
		}
		rep := *p.rep
		metrics, settings, logText := rep.Metrics, rep.Settings, rep.Log
		rep.Metrics, rep.Settings, rep.Log = "", "", ""
		rb, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return err
		}
		for _, f := range []struct {
			name string
			data []byte
		}{{"report.json", append(rb, '\n')}, {"metrics.txt", []byte(metrics)}, {"settings.toml", []byte(settings)}, {"log.txt", []byte(logText)}} {
			if err := add(dir+f.name, f.data); err != nil {
				return err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return zw.Close()
}

// safeName keeps a node name usable as a file name (names are checked at start, but a
// remote answer is outside data).
func safeName(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c == '-' || c == '.' || c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			b[i] = '_'
		}
	}
	if len(b) == 0 || len(b) > 64 || string(b) == "." || string(b) == ".." {
		return "node"
	}
	return string(b)
}
