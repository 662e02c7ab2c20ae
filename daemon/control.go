package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/cluster"
	"github.com/pmgcm/pmgcm/fsm"
	"github.com/pmgcm/pmgcm/raftnode"
	"github.com/pmgcm/pmgcm/transport"
)

// openControl listens on the control socket (mode 0600) and serves the API on it.
func (d *Daemon) openControl() error {
	path := d.cfg.Socket
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("create socket directory %s: %w", filepath.Dir(path), err)
	}
	if err := clearStaleSocket(path); err != nil {
		return err
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("listen on control socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		_ = ln.Close()
		return fmt.Errorf("chmod control socket %s: %w", path, err)
	}
	d.ctl, ln = d.limits.controlServer(d.drain.refuseWhileStopping(d.controlHandler()), ln)
	d.ctlLn = ln
	d.bg.Add(1)
	go func() {
		defer d.bg.Done()
		if err := d.ctl.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.logger.Error("control socket stopped", "error", err)
		}
	}()
	return nil
}

// clearStaleSocket makes path free for the control socket. A socket file is left behind
// by a daemon that was killed: it is removed only if it is a socket (by file type, never
// following a link) and nobody answers on it. Anything else at path (a regular file such
// as a mistyped configuration path, a directory, a symbolic link) is refused, untouched.
func clearStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("control socket %s: %w", path, err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("%w: %s is %s: it was left as it is; give --socket the path of the control socket (default %s)",
			ErrSocketPath, path, fileKind(fi.Mode()), DefaultSocket)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		_ = c.Close()
		return fmt.Errorf("%w: %s answers: stop that daemon or give this one another --socket", ErrSocketInUse, path)
	}
	// Remove what was checked, not what may have replaced it meanwhile.
	if now, err := os.Lstat(path); err != nil || !os.SameFile(fi, now) {
		return fmt.Errorf("%w: %s changed while it was checked: start the daemon again", ErrSocketPath, path)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("remove stale socket %s: %w", path, err)
	}
	return nil
}

// fileKind names the type of a file for an error message.
func fileKind(m fs.FileMode) string {
	switch m.Type() {
	case 0:
		return "a regular file"
	case fs.ModeDir:
		return "a directory"
	case fs.ModeSymlink:
		return "a symbolic link"
	case fs.ModeNamedPipe:
		return "a named pipe"
	case fs.ModeDevice, fs.ModeDevice | fs.ModeCharDevice:
		return "a device"
	}
	return "not a socket"
}

func (d *Daemon) controlHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+api.PathStatus, d.ctlAPI.handleStatus)
	mux.HandleFunc("POST "+api.PathCreate, d.ctlAPI.handleCreate)
	mux.HandleFunc("GET "+api.PathConfig, d.metrics.countConfig(opRead, d.ctlAPI.handleConfigGet))
	mux.HandleFunc("PUT "+api.PathConfig, d.metrics.countConfig(opWrite, d.ctlAPI.handleConfigSet))
	mux.HandleFunc("DELETE "+api.PathConfig, d.metrics.countConfig(opWrite, d.ctlAPI.handleConfigDelete))
	mux.HandleFunc("GET "+api.PathConfigList, d.metrics.countConfig(opRead, d.ctlAPI.handleConfigList))
	mux.HandleFunc("GET "+api.PathConfigWatch, d.watcher.handleConfigWatch)
	mux.HandleFunc("POST "+api.PathJoinProbe, func(w http.ResponseWriter, r *http.Request) {
		var req api.JoinProbeRequest
		if decodeBody(w, r, &req) {
			res, err := d.joiner.probe(r.Context(), req.Master)
			reply(w, res, err)
		}
	})
	mux.HandleFunc("POST "+api.PathJoin, func(w http.ResponseWriter, r *http.Request) {
		var req api.JoinRequest
		if decodeBody(w, r, &req) {
			start := time.Now()
			res, err := d.joiner.join(r.Context(), req)
			d.metrics.observeOp("join", start, err)
			reply(w, res, err)
		}
	})
	mux.HandleFunc("GET "+api.PathJoinCmd, func(w http.ResponseWriter, r *http.Request) {
		res, err := d.creator.joinCmd(r.Context(), false, 0)
		reply(w, res, err)
	})
	mux.HandleFunc("POST "+api.PathJoinCmd, func(w http.ResponseWriter, r *http.Request) {
		var ttl time.Duration
		if v := r.URL.Query().Get("ttl"); v != "" {
			var err error
			if ttl, err = time.ParseDuration(v); err != nil || ttl <= 0 {
				writeErr(w, fmt.Errorf("%w: ttl %q is not a positive duration (e.g. 30m, 24h)", ErrBadRequest, v))
				return
			}
		}
		res, err := d.creator.joinCmd(r.Context(), r.URL.Query().Get("rotate") == "1", ttl)
		reply(w, res, err)
	})
	mux.HandleFunc("POST "+api.PathDelete, func(w http.ResponseWriter, r *http.Request) {
		var req api.DeleteRequest
		if decodeBody(w, r, &req) {
			res, err := d.memberOps.deleteMember(r.Context(), req.CID, req.Force)
			reply(w, res, err)
		}
	})
	mux.HandleFunc("POST "+api.PathPromote, func(w http.ResponseWriter, r *http.Request) {
		var req api.PromoteRequest
		if decodeBody(w, r, &req) {
			start := time.Now()
			res, err := d.promoter.promote(r.Context(), req.Force)
			d.metrics.observeOp("promote", start, err)
			reply(w, res, err)
		}
	})
	mux.HandleFunc("POST "+api.PathSync, func(w http.ResponseWriter, r *http.Request) {
		var req api.SyncRequest
		if decodeBody(w, r, &req) {
			start := time.Now()
			res, err := d.syncer.sync(r.Context(), req.MasterIP)
			d.metrics.observeOp("sync", start, err)
			reply(w, res, err)
		}
	})
	mux.HandleFunc("POST "+api.PathUpdateFingerprints, func(w http.ResponseWriter, r *http.Request) {
		res, err := d.certs.updateFingerprints(r.Context(), r.URL.Query().Get("all") == "1")
		reply(w, res, err)
	})
	mux.HandleFunc("GET "+api.PathQuarantine, d.mail.handleQuarantineList)
	mux.HandleFunc("GET "+api.PathQuarantineShow, d.mail.handleQuarantineShow)
	mux.HandleFunc("POST "+api.PathQuarantineDelete, d.mail.handleQuarantineState(api.MailDeleted))
	mux.HandleFunc("POST "+api.PathQuarantineRelease, d.mail.handleQuarantineState(api.MailReleased))
	mux.HandleFunc("GET "+api.PathBackup, d.backups.handleBackup)
	mux.HandleFunc("POST "+api.PathRestore, d.backups.handleRestore)
	mux.HandleFunc("GET "+api.PathReport, d.report.handleReport)
	registerOps(mux, d.checker, d.maint)
	if d.cfg.FaultInjection {
		mux.HandleFunc("POST "+api.PathDebugPartition, func(w http.ResponseWriter, r *http.Request) {
			var req api.PartitionRequest
			if decodeBody(w, r, &req) {
				d.mux.Partition(req.Hosts)
				d.peer.CloseIdleConnections()
				writeJSON(w, http.StatusOK, req)
			}
		})
	}
	return mux
}

func (c *controlAPI) handleStatus(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, c.stat.status(r.Context()))
}

func (c *controlAPI) handleCreate(w http.ResponseWriter, r *http.Request) {
	res, err := c.creator.create(r.Context())
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

func (c *controlAPI) handleConfigGet(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	key := q.Get("key")
	if err := fsm.ValidateKey(key); err != nil {
		writeErr(w, err)
		return
	}
	if err := c.readAt(w, r.Context(), q); err != nil {
		writeErr(w, err)
		return
	}
	e, ok, err := c.fsm.Get(key)
	if err != nil {
		writeErr(w, fmt.Errorf("key %q: %w", key, err))
		return
	}
	if !ok {
		writeErr(w, fmt.Errorf("%w: key %q", fsm.ErrNotFound, key))
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set(api.HeaderVersion, strconv.FormatUint(e.Version, 10))
	w.Header().Set("Content-Length", strconv.Itoa(len(e.Value)))
	_, _ = w.Write(e.Value)
}

// readAt prepares a read of the request whose query is q: linearizable by default, or
// with stale=1 served from this node's own state, with headers that say how far behind
// it may be.
func (c *controlAPI) readAt(w http.ResponseWriter, ctx context.Context, q url.Values) error {
	if q.Get("stale") != "1" {
		return c.writes.linearizableRead(ctx)
	}
	if err := c.host.checkServing(); err != nil {
		return err
	}
	st := c.host.rn().Stats()
	contact := "never"
	switch {
	case c.host.rn().IsLeader():
		contact = "0s"
	case st.LastContact > 0:
		contact = st.LastContact.Round(time.Millisecond).String()
	}
	w.Header().Set(api.HeaderStale, "1")
	w.Header().Set(api.HeaderAppliedIndex, strconv.FormatUint(c.fsm.AppliedIndex(), 10))
	w.Header().Set(api.HeaderLastContact, contact)
	return nil
}

// ifVersion reads the optional if_version parameter of a write.
func ifVersion(r *http.Request) (*uint64, error) {
	s := r.URL.Query().Get("if_version")
	if s == "" {
		return nil, nil
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("%w: if_version %q is not a version number", ErrBadRequest, s)
	}
	return &v, nil
}

func (c *controlAPI) handleConfigSet(w http.ResponseWriter, r *http.Request) {
	key := r.URL.Query().Get("key")
	if err := fsm.ValidateKey(key); err != nil {
		writeErr(w, err)
		return
	}
	value, err := io.ReadAll(io.LimitReader(r.Body, fsm.MaxValueLen+1))
	if err != nil {
		writeErr(w, fmt.Errorf("read value: %w", err))
		return
	}
	if len(value) > fsm.MaxValueLen {
		writeErr(w, fmt.Errorf("%w: values are limited to %d bytes", fsm.ErrTooLarge, fsm.MaxValueLen))
		return
	}
	iv, err := ifVersion(r)
	if err != nil {
		writeErr(w, err)
		return
	}
	c.writeConfig(w, r.Context(), key, &fsm.ConfigSet{Key: key, Value: value, IfVersion: iv})
}

func (c *controlAPI) handleConfigDelete(w http.ResponseWriter, r *http.Request) {
	key := r.URL.Query().Get("key")
	if err := fsm.ValidateKey(key); err != nil {
		writeErr(w, err)
		return
	}
	iv, err := ifVersion(r)
	if err != nil {
		writeErr(w, err)
		return
	}
	c.writeConfig(w, r.Context(), key, &fsm.ConfigDelete{Key: key, IfVersion: iv})
}

func (c *controlAPI) writeConfig(w http.ResponseWriter, ctx context.Context, key string, cmd fsm.Command) {
	if e := c.ops.diskGuardRefusal(c.host.self()); e != nil {
		writeJSON(w, http.StatusInsufficientStorage, e)
		return
	}
	res, err := c.writes.propose(ctx, cmd)
	if err != nil {
		if errors.Is(err, fsm.ErrVersionConflict) && res != nil {
			err = &versionConflict{err: err, version: res.Version}
		}
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, api.WriteResponse{Key: key, Version: res.Index})
}

func (c *controlAPI) handleConfigList(w http.ResponseWriter, r *http.Request) {
	if err := c.readAt(w, r.Context(), r.URL.Query()); err != nil {
		writeErr(w, err)
		return
	}
	// Streamed (issue 16): each entry is read and encoded on its own; the bytes are
	// those of an api.ConfigList encoded whole. A value that cannot be read ends the
	// answer short, so that the client's decoder fails instead of taking a part.
	entries := c.fsm.ListShared(r.URL.Query().Get("prefix"))
	defer entries.Close()
	streamJSON(w, `{"entries":[`, `]}`, entries.Len(), func(i int) any {
		e, err := entries.At(i)
		if err != nil {
			return unencodable{err}
		}
		ce := api.ConfigEntry{Key: e.Key, Version: e.Version, Size: len(e.Value)}
		ce.Value, ce.ValueBase64 = encodeValue(e.Value)
		return ce
	})
}

// maxControlBody bounds every JSON request body of the control socket (a restore's
// backup file is streamed, not decoded by decodeBody). Node-to-node bodies have their
// own bound, cluster.MaxRequestBytes.
const maxControlBody = 64 << 10

// decodeBody decodes a JSON request body of at most maxControlBody into v, answering the
// error itself if it cannot.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxControlBody)).Decode(v); err != nil {
		writeErr(w, fmt.Errorf("%w: request body: %v", ErrBadRequest, err))
		return false
	}
	return true
}

// reply answers v as JSON, or err.
func reply[T any](w http.ResponseWriter, v *T, err error) {
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// writeErr maps an error to its HTTP status and api error code.
func writeErr(w http.ResponseWriter, err error) {
	code, status, hint := api.CodeInternal, http.StatusInternalServerError, ""
	var remote *cluster.RemoteError
	var conflict *versionConflict
	switch {
	case errors.As(err, &conflict):
		writeJSON(w, http.StatusConflict, api.Error{Code: api.CodeConflict, Message: err.Error(), Version: conflict.version,
			Hint: "read the current value and version (pmgcm config get), then retry with --if-version set to it"})
		return
	case errors.As(err, &remote):
		writeJSON(w, remote.Status, remote.E)
		return
	case errors.Is(err, ErrRemoved):
		code, status = api.CodeRemoved, http.StatusConflict
		hint = "to come back, join again: pmgcm join <master_ip> (all data on this node is replaced, and it gets a new CID)"
	case errors.Is(err, ErrFenced):
		code, status = api.CodeFenced, http.StatusConflict
	case errors.Is(err, ErrBehind):
		code, status = api.CodeBehind, http.StatusConflict
	case errors.Is(err, fsm.ErrValueUnreadable):
		hint = "this node's disk failed a read under DATA/fsm-values (see the kernel log: dmesg); " +
			"restart pmgclusterd to rebuild the values from the Raft log, or read from another member"
	case errors.Is(err, ErrBusy):
		code, status = api.CodeUnavailable, http.StatusServiceUnavailable
	case errors.Is(err, ErrMemberUnreachable):
		code, status = api.CodeUnreachable, http.StatusServiceUnavailable
		hint = "pmgcm status shows which members are down"
	case errors.Is(err, ErrPromotionPending):
		code, status = api.CodeUnavailable, http.StatusServiceUnavailable
		hint = "restart pmgclusterd on this node (systemctl restart pmgclusterd) to finish the promotion"
	case errors.Is(err, ErrMaintenance):
		code, status = api.CodeUnavailable, http.StatusConflict
	case errors.Is(err, ErrSyncing):
		code, status = api.CodeUnavailable, http.StatusServiceUnavailable
		hint = "pmgcm status shows when the node is in state A"
	case errors.Is(err, ErrTokenExpired):
		code, status = api.CodeTokenExpired, http.StatusForbidden
		hint = "make a new token on a member: pmgcm join-cmd --rotate (add --ttl D for one that expires)"
	case errors.Is(err, ErrThrottled):
		code, status = api.CodeThrottled, http.StatusTooManyRequests
		hint = "check the token (pmgcm join-cmd on a member), wait, then try again"
	case errors.Is(err, ErrForbidden):
		code, status = api.CodeBadRequest, http.StatusForbidden
	case errors.Is(err, ErrBadToken):
		code, status = api.CodeBadToken, http.StatusForbidden
		hint = "get the current token with: pmgcm join-cmd (on a member)"
	case errors.Is(err, ErrIncompatible), errors.Is(err, fsm.ErrUnknownCommand):
		code, status = api.CodeIncompatible, http.StatusConflict
	case errors.Is(err, fsm.ErrMemberExists):
		code, status = api.CodeMemberExists, http.StatusConflict
	case errors.Is(err, fsm.ErrUnknownMember):
		code, status = api.CodeNotFound, http.StatusNotFound
	case errors.Is(err, ErrNotMaster):
		code, status = api.CodeBadRequest, http.StatusConflict
	case errors.Is(err, transport.ErrFingerprintMismatch), errors.Is(err, transport.ErrBadFingerprint):
		code, status = api.CodeFingerprint, http.StatusBadRequest
	case errors.Is(err, ErrBadRequest), errors.Is(err, cluster.ErrBadRequest), errors.Is(err, fsm.ErrBadCommand):
		code, status = api.CodeBadRequest, http.StatusBadRequest
	case errors.Is(err, fsm.ErrVersionConflict):
		code, status = api.CodeConflict, http.StatusConflict
	case errors.Is(err, fsm.ErrNotFound):
		code, status = api.CodeNotFound, http.StatusNotFound
	case errors.Is(err, fsm.ErrInvalidKey):
		code, status = api.CodeBadRequest, http.StatusBadRequest
	case errors.Is(err, fsm.ErrTooLarge):
		code, status = api.CodeTooLarge, http.StatusRequestEntityTooLarge
	case errors.Is(err, ErrClusterExists), errors.Is(err, fsm.ErrClusterExists):
		code, status = api.CodeClusterExists, http.StatusConflict
	case errors.Is(err, ErrNoCluster), errors.Is(err, fsm.ErrNoCluster):
		code, status = api.CodeNoCluster, http.StatusConflict
		hint = "create one with: pmgcm create, or join one with: pmgcm join <master_ip>"
	case errors.Is(err, raftnode.ErrUnknownOutcome):
		// Before no_quorum: callLeader sends a no_quorum request again, and an entry that
		// may have been appended must never be (raftnode.ErrTimeout is never appended).
		code, status = api.CodeUnknownOutcome, http.StatusServiceUnavailable
		hint = "the master changed or stopped while the request was in flight: check whether it took effect (pmgcm config get for a key, pmgcm status for membership)"
	case errors.Is(err, raftnode.ErrNoLeader), errors.Is(err, raftnode.ErrTimeout):
		code, status = api.CodeNoQuorum, http.StatusServiceUnavailable
		hint = "check that a majority of the cluster's voters are up (pmgcm status); if the master is lost for good, see pmgcm promote"
	case errors.Is(err, ErrReadFailed):
		code, status, hint = api.CodeReadFailed, http.StatusServiceUnavailable, readFailedHint
	case errors.Is(err, raftnode.ErrNotLeader):
		code, status = api.CodeNotLeader, http.StatusServiceUnavailable
	case errors.Is(err, raftnode.ErrTransferFailed):
		code, status = api.CodeUnavailable, http.StatusServiceUnavailable
		hint = "the cluster was busy or electing a master: run pmgcm promote again"
	case errors.Is(err, cluster.ErrShuttingDown):
		code, status = api.CodeShuttingDown, http.StatusServiceUnavailable
		hint = "nothing was changed: retry on another node"
	case errors.Is(err, raftnode.ErrClosed):
		code, status = api.CodeUnavailable, http.StatusServiceUnavailable
	}
	writeJSON(w, status, api.Error{Code: code, Message: err.Error(), Hint: hint})
}

// versionConflict is a failed compare-and-set with the key's current version.
type versionConflict struct {
	err     error
	version uint64
}

func (e *versionConflict) Error() string { return e.err.Error() }
func (e *versionConflict) Unwrap() error { return e.err }
