package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"sync/atomic"
	"time"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/fsm"
	"github.com/pmgcm/pmgcm/raftnode"
	"github.com/pmgcm/pmgcm/transport"
)

// ProtocolVersion is the version of the node-to-node protocol (cluster RPC, join and
// mail replication). Nodes of different versions refuse to join each other.
//
// 2: mail replication answers carry the serving node's compaction floors ("skip").
const ProtocolVersion = 2

// StateFormat is the version of the replicated state's encoding: commands and snapshots.
const StateFormat = fsm.EncodingVersion

// Paths of the cluster RPC (ChanRPC: members only, mutual TLS) and of the join channel
// (ChanJoin: no client certificate; the caller pins the server's fingerprint).
const (
	rpcNode       = "/rpc/v1/node"
	rpcApply      = "/rpc/v1/apply"
	rpcReadIndex  = "/rpc/v1/readindex"
	rpcAdmit      = "/rpc/v1/admit"
	rpcDelete     = "/rpc/v1/delete"
	joinInfoPath  = "/join/v1/info"
	joinAdmitPath = "/join/v1/admit"
	joinCheckPath = "/join/v1/membership"
)

// errSelfLeader tells a caller of callLeader that this node itself is the master now.
var errSelfLeader = errors.New("this node is the master")

// errLostMaster tells onMaster that this node stopped being the master before the
// operation proposed anything: nothing changed, and the new master may take it.
var errLostMaster = errors.New("this node stopped being the master before it changed anything")

// onMaster runs a master-only operation: local while this node is the master, forward
// (to the master, through callLeader) otherwise, until one of them answers. local
// returns an error wrapping errLostMaster when leadership moved before its first
// proposal; forward returns errSelfLeader when this node won an election meanwhile.
func onMaster[T any](ctx context.Context, d *Daemon, local, forward func() (T, error)) (T, error) {
	for {
		if d.rn().IsLeader() {
			out, err := local()
			if !errors.Is(err, errLostMaster) {
				return out, err
			}
		}
		out, err := forward()
		if !errors.Is(err, errSelfLeader) {
			return out, err
		}
		// This node is the master again, or still is while it hands over (a leadership
		// transfer refuses proposals): look again shortly rather than spin.
		if err := pause(ctx, 20*time.Millisecond); err != nil {
			return out, fmt.Errorf("%w: %v", raftnode.ErrNoLeader, err)
		}
	}
}

// pause waits for d, or until ctx ends (its error).
func pause(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// firstProposal marks err, from an operation's first proposal, with errLostMaster when
// that proposal never happened because this node is no longer the master.
func firstProposal(err error) error {
	if notProposed(err) {
		return fmt.Errorf("%w: %w", errLostMaster, err)
	}
	return err
}

// remoteError is an error answered by another node, kept with its api code so that the
// control socket passes it on unchanged.
type remoteError struct {
	Status int
	E      api.Error
	// notSent is true when the request never left this node (no connection was made):
	// retrying it cannot apply it twice.
	notSent bool
}

func (e *remoteError) Error() string { return e.E.Message }

// Code is the api error code the other node answered.
func (e *remoteError) Code() string { return e.E.Code }

// applyResult is the answer of rpcApply.
type applyResult struct {
	Index   uint64 `json:"index"`
	Version uint64 `json:"version"`
	CID     uint64 `json:"cid"`
}

// openRPC serves the cluster RPC and join channels of the mux.
func (d *Daemon) openRPC() {
	d.rpcClient = d.mux.HTTPClient(transport.ChanRPC)
	rpc := http.NewServeMux()
	rpc.HandleFunc("GET "+rpcNode, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, d.localNode())
	})
	rpc.HandleFunc("POST "+rpcApply, d.handleRPCApply)
	rpc.HandleFunc("GET "+rpcReadIndex, d.handleRPCReadIndex)
	rpc.HandleFunc("POST "+rpcAdmit, d.handleRPCAdmit)
	rpc.HandleFunc("POST "+rpcDelete, d.handleRPCDelete)
	rpc.HandleFunc("POST "+rpcTransfer, d.handleRPCTransfer)
	rpc.HandleFunc("POST "+rpcReadmit, d.handleRPCReadmit)
	rpc.HandleFunc("POST "+rpcRecordCert, d.handleRecordCert)
	rpc.HandleFunc("POST "+rpcRenewCert, d.handleRenewCert)
	join := http.NewServeMux()
	join.HandleFunc("GET "+joinInfoPath, d.handleJoinInfo)
	join.HandleFunc("POST "+joinAdmitPath, d.handleAdmit)
	join.HandleFunc("POST "+joinCheckPath, d.handleMembershipCheck)
	join.HandleFunc("POST "+joinReadmitPath, d.handleReadmit)
	for _, s := range []struct {
		ch transport.Channel
		h  http.Handler
	}{{transport.ChanRPC, d.withReport(rpc)}, {transport.ChanJoin, join}} {
		srv := &http.Server{Handler: s.h, ConnContext: transport.ConnContext, ReadHeaderTimeout: 10 * time.Second}
		d.servers = append(d.servers, srv)
		ln := d.mux.Listener(s.ch)
		d.bg.Add(1)
		go func() {
			defer d.bg.Done()
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) && ignoreClosed(err) != nil {
				d.logger.Debug("cluster server stopped", "error", err)
			}
		}()
	}
}

func (d *Daemon) handleRPCApply(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(io.LimitReader(r.Body, 2*fsm.MaxValueLen))
	if err != nil {
		writeErr(w, err)
		return
	}
	cmd, err := fsm.Decode(b)
	if err != nil {
		writeErr(w, err)
		return
	}
	res, err := d.applyLocal(r.Context(), cmd)
	if err != nil {
		if errors.Is(err, fsm.ErrVersionConflict) && res != nil {
			err = &versionConflict{err: err, version: res.Version}
		}
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, applyResult{Index: res.Index, Version: res.Version, CID: res.CID})
}

func (d *Daemon) handleRPCReadIndex(w http.ResponseWriter, r *http.Request) {
	idx, err := d.rn().ReadIndex(r.Context())
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]uint64{"index": idx})
}

// call sends one request to the node at addr over client and decodes the JSON answer
// into out (if not nil). in is JSON-encoded unless it is a []byte.
func (d *Daemon) call(ctx context.Context, client *http.Client, addr, method, path string, in, out any) error {
	var body io.Reader
	switch v := in.(type) {
	case nil:
	case []byte:
		body = bytes.NewReader(v)
	default:
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	var gotConn atomic.Bool
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) { gotConn.Store(true) }})
	req, err := http.NewRequestWithContext(ctx, method, "http://"+addr+path, body)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return &remoteError{Status: http.StatusBadGateway, notSent: !gotConn.Load(), E: api.Error{
			Code: api.CodeUnreachable, Message: fmt.Sprintf("cannot reach the node at %s: %v", addr, unwrapURLError(err)),
		}}
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		var e api.Error
		if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&e); err != nil || e.Message == "" {
			e = api.Error{Code: api.CodeInternal, Message: fmt.Sprintf("node at %s answered %s", addr, resp.Status)}
		}
		return &remoteError{Status: resp.StatusCode, E: e}
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

func unwrapURLError(err error) error {
	var ue interface{ Unwrap() error }
	if errors.As(err, &ue) {
		if inner := ue.Unwrap(); inner != nil {
			return inner
		}
	}
	return err
}

// leaderAddr returns the address of the current leader, or an error if there is none.
func (d *Daemon) leaderAddr() (string, error) {
	addr, _ := d.rn().Leader()
	if addr == "" {
		return "", raftnode.ErrNoLeader
	}
	return string(addr), nil
}

// applyLocal applies cmd on this node, which must be the leader, and turns a state
// machine refusal into an error.
func (d *Daemon) applyLocal(ctx context.Context, cmd fsm.Command) (*fsm.Result, error) {
	if err := ctx.Err(); err != nil {
		// The caller gave up (a forwarding node that saw another master elected): do not
		// apply what nobody will hear of.
		return nil, fmt.Errorf("the request was abandoned before it was proposed: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	start := time.Now()
	res, err := d.rn().Apply(ctx, cmd)
	if err == nil {
		d.metrics.applyLatency.Observe(time.Since(start).Seconds())
	}
	if err != nil {
		return nil, err
	}
	if res.Err != nil {
		return res, res.Err
	}
	return res, nil
}

// propose commits cmd through the leader: locally on the leader, forwarded over the
// cluster port from any other node.
func (d *Daemon) propose(ctx context.Context, cmd fsm.Command) (*fsm.Result, error) {
	if err := d.checkServing(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var b []byte // the command's wire form, made once it must be forwarded
	return onMaster(ctx, d, func() (*fsm.Result, error) {
		res, err := d.applyLocal(ctx, cmd)
		if err != nil && res == nil {
			err = firstProposal(err)
		}
		return res, err
	}, func() (*fsm.Result, error) {
		if b == nil {
			var err error
			if b, err = fsm.Encode(cmd); err != nil {
				return nil, err
			}
		}
		var out applyResult
		err := d.callLeader(ctx, http.MethodPost, rpcApply, b, &out, false)
		var re *remoteError
		switch {
		case errors.As(err, &re) && re.E.Code == api.CodeConflict:
			return &fsm.Result{Version: re.E.Version}, &versionConflict{err: fmt.Errorf("%w: %s", fsm.ErrVersionConflict, re.E.Message), version: re.E.Version}
		case err != nil:
			return nil, err
		}
		return &fsm.Result{Index: out.Index, Version: out.Version, CID: out.CID}, nil
	})
}

// callLeader sends a request to the master. It waits through an election, and retries
// a master that cannot be reached (one that just died is still named until the next
// election) until ctx ends, then reports the lost quorum. A request that may have reached
// the master is retried only if idempotent, so that a write never applies twice.
//
// A master this node has not heard from lately (leaderFresh) counts as none yet: it may
// have stopped, and the election is under way. Each attempt is bounded (attemptTimeout):
// a stopped master (SIGSTOP, a hung disk) keeps its connections open without answering.
// A non-idempotent request it took but did not answer fails with ErrUnknownOutcome.
func (d *Daemon) callLeader(ctx context.Context, method, path string, in, out any, idempotent bool) error {
	for {
		if addr, err := d.leaderAddr(); err == nil && (addr == d.cfg.Addr() || d.leaderFresh()) {
			if addr == d.cfg.Addr() {
				return errSelfLeader // this node won the election meanwhile: the caller acts locally
			}
			err, gaveUp := d.attempt(ctx, addr, method, path, in, out, d.attemptTimeout(idempotent))
			var re *remoteError
			switch {
			case err == nil, !errors.As(err, &re):
				return err
			case re.E.Code == api.CodeUnreachable && (re.notSent || idempotent):
			case re.E.Code == api.CodeUnreachable:
				// Sent, and not answered: the master may have applied it (it stopped, crashed
				// or was deposed after it took the request).
				why := gaveUp
				if why == nil {
					why = fmt.Errorf("the connection failed before it answered: %s", re.E.Message)
				}
				return fmt.Errorf("%w: the master at %s took the request but %v", raftnode.ErrUnknownOutcome, addr, why)
			case re.E.Code == api.CodeNotLeader || re.E.Code == api.CodeNoQuorum:
				// Not applied: the node we asked is no master (any more).
			default:
				return err
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: no quorum: %s; see pmgcm promote", raftnode.ErrNoLeader, d.reachableVoters())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// attempt sends one request to the master at addr. It gives up when the master has not
// answered within limit, or once another master is elected: the reason is gaveUp (nil
// when it did not give up).
func (d *Daemon) attempt(ctx context.Context, addr, method, path string, in, out any, limit time.Duration) (err, gaveUp error) {
	actx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	changed := d.rn().LeaderChanged()
	done := make(chan struct{})
	defer close(done)
	go func() {
		deadline := time.NewTimer(limit)
		defer deadline.Stop()
		for {
			// Checked after each (re)arming of changed, so that no election is missed.
			if now, err := d.leaderAddr(); err == nil && now != addr {
				cancel(fmt.Errorf("did not answer before %s was elected master", now))
				return
			}
			select {
			case <-done:
				return
			case <-deadline.C:
				cancel(fmt.Errorf("did not answer within %s (it may have stopped)", limit))
				return
			case <-changed:
				changed = d.rn().LeaderChanged()
			}
		}
	}()
	err = d.call(actx, d.rpcClient, addr, method, path, in, out)
	if ctx.Err() == nil {
		gaveUp = context.Cause(actx)
	}
	return err, gaveUp
}

// leaderFresh reports whether this node has heard from its master within half a
// heartbeat timeout; a live master contacts its followers about ten times as often.
func (d *Daemon) leaderFresh() bool {
	since := d.rn().SinceLeaderContact()
	return since >= 0 && since <= d.cfg.Raft.HeartbeatTimeout/2
}

// forwardAnswerTimeout bounds the master's answer to a forwarded request that is not
// idempotent: longer than the two applies (5 s each) of the longest such request.
const forwardAnswerTimeout = 12 * time.Second

// attemptTimeout bounds one attempt of a request forwarded to the master.
func (d *Daemon) attemptTimeout(idempotent bool) time.Duration {
	if idempotent {
		return max(2*time.Second, d.electionWait())
	}
	return forwardAnswerTimeout
}

// notProposed reports whether err says this node stopped leading before it proposed
// anything: the request may go to the master instead.
func notProposed(err error) bool {
	return errors.Is(err, raftnode.ErrNotLeader) || errors.Is(err, raftnode.ErrNoLeader)
}

// waitLeaderAddr waits briefly for a leader to be known (an election in progress).
func (d *Daemon) waitLeaderAddr(ctx context.Context) (string, error) {
	for {
		addr, err := d.leaderAddr()
		if err == nil {
			return addr, nil
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("%w: no quorum: %s; see pmgcm promote", raftnode.ErrNoLeader, d.reachableVoters())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// linearizableRead returns once the local state machine reflects every write
// acknowledged before the call: on the leader at once, on a follower once it has applied
// the leader's read index.
func (d *Daemon) linearizableRead(ctx context.Context) error {
	if err := d.checkServing(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := onMaster(ctx, d, func() (struct{}, error) {
		_, err := d.rn().ReadIndex(ctx)
		return struct{}{}, firstProposal(err)
	}, func() (struct{}, error) {
		var out struct {
			Index uint64 `json:"index"`
		}
		if err := d.callLeader(ctx, http.MethodGet, rpcReadIndex, nil, &out, true); err != nil {
			return struct{}{}, err
		}
		return struct{}{}, d.rn().WaitApplied(ctx, out.Index)
	})
	return err
}

// checkServing refuses cluster operations on a node that was removed from its cluster
// or fenced by a forced promotion elsewhere.
func (d *Daemon) checkServing() error {
	me := d.self()
	if me.Removed != "" {
		return fmt.Errorf("%w: this node was removed from cluster %s", ErrRemoved, me.Removed)
	}
	if me.Fenced != nil {
		return fencedError(me.Fenced)
	}
	return nil
}
