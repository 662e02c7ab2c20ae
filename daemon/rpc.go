package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/cluster"
	"github.com/pmgcm/pmgcm/fsm"
	"github.com/pmgcm/pmgcm/internal/version"
	"github.com/pmgcm/pmgcm/raftnode"
	"github.com/pmgcm/pmgcm/transport"
)

// ProtocolVersion is the node-to-node protocol version this build speaks (see
// cluster.ProtocolVersion).
const ProtocolVersion = cluster.ProtocolVersion

// StateFormat is the version of the replicated state's encoding: commands and snapshots.
const StateFormat = cluster.StateFormat

// openRPC serves the cluster RPC and join channels of the mux (cluster.Service over
// rpcHandler) and makes the client and forwarder this node sends with.
func (d *Daemon) openRPC() {
	d.peer = cluster.NewClient(d.peerHTTPClient())
	d.fwd = cluster.NewForwarder(cluster.ForwarderConfig{
		Self:             d.cfg.Addr(),
		Raft:             leadership{d},
		Client:           d.peer,
		HeartbeatTimeout: d.cfg.Raft.HeartbeatTimeout,
		ElectionWait:     electionWait(d.cfg.Raft),
		NoQuorum:         d.stat.reachableVoters,
	})
	d.writes.batcher = cluster.NewBatcher(d.fwd)
	svc := cluster.NewService(rpcHandler{d}, writeErr)
	for _, s := range []struct {
		ch transport.Channel
		h  http.Handler
	}{{transport.ChanRPC, d.report.withReport(svc.RPC())}, {transport.ChanJoin, withJoinSource(svc.Join())}} {
		srv, ln := d.limits.channelServer(s.ch, s.h, d.mux.Listener(s.ch))
		d.servers = append(d.servers, srv)
		d.bg.Add(1)
		go func() {
			defer d.bg.Done()
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) && ignoreClosed(err) != nil {
				d.logger.Debug("cluster server stopped", "error", err)
			}
		}()
	}
}

// leadership is the cluster.Leadership of whichever Raft instance runs now.
type leadership struct{ d *Daemon }

func (l leadership) IsLeader() bool { return l.d.rn().IsLeader() }

func (l leadership) LeaderAddr() string {
	addr, _ := l.d.rn().Leader()
	return string(addr)
}

func (l leadership) LeaderChanged() <-chan struct{}    { return l.d.rn().LeaderChanged() }
func (l leadership) SinceLeaderContact() time.Duration { return l.d.rn().SinceLeaderContact() }

// writer owns this node's write path: committing a command on this node, the master
// (applyLocal), through the master from any node (propose), the linearizable read, and
// the current master's address.
type writer struct {
	// raft is this node's Raft node (Daemon.rn; made after the writer).
	raft func() *raftnode.Node
	// peer and fwd are the cluster RPC client and the forwarder (made by openRPC).
	peer func() *cluster.Client
	fwd  func() *cluster.Forwarder
	// metrics observe the apply latency.
	metrics *metrics
	// drain tells a write refused because the node stops.
	drain *stopDrain
	// checkServing refuses while this node is removed or fenced (Daemon.checkServing).
	checkServing func() error
	// localReads and remoteReads share read-index rounds among concurrent reads: on the
	// master (one VerifyLeader) and through it (one ReadIndex RPC); see readBatch.
	localReads, remoteReads *readBatch
	// batcher forwards the writes that arrive together in one request, once the cluster
	// version has it (canBatch); made by openRPC.
	batcher  *cluster.Batcher
	canBatch func() bool
}

// newWriter returns the write path of d, whose metrics and drain are made.
func newWriter(d *Daemon) *writer {
	w := &writer{
		raft: d.rn, peer: func() *cluster.Client { return d.peer }, fwd: func() *cluster.Forwarder { return d.fwd },
		metrics: d.metrics, drain: d.drain, checkServing: d.checkServing,
		canBatch: func() bool { return d.atLevel(version.LevelClusterVersion) },
	}
	w.localReads = newReadBatch(readTimeout, func(ctx context.Context) (uint64, error) {
		return w.raft().ReadIndex(ctx)
	})
	w.remoteReads = newReadBatch(readTimeout, func(ctx context.Context) (uint64, error) {
		var idx uint64
		err := w.fwd().CallLeader(ctx, true, func(ctx context.Context, addr string) (err error) {
			idx, err = w.peer().ReadIndex(ctx, addr)
			return err
		})
		return idx, err
	})
	return w
}

// readTimeout bounds a linearizable read, and each shared read-index round.
const readTimeout = 5 * time.Second

// leaderAddr returns the address of the current leader, or an error if there is none.
func (w *writer) leaderAddr() (string, error) {
	if addr, _ := w.raft().Leader(); addr != "" {
		return string(addr), nil
	}
	return "", raftnode.ErrNoLeader
}

// applyLocal applies cmd on this node, which must be the leader, and turns a state
// machine refusal into an error.
func (w *writer) applyLocal(ctx context.Context, cmd fsm.Command) (*fsm.Result, error) {
	if err := ctx.Err(); err != nil {
		// The caller gave up (a forwarding node that saw another master elected): do not
		// apply what nobody will hear of.
		return nil, fmt.Errorf("the request was abandoned before it was proposed: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	start := time.Now()
	res, err := w.raft().Apply(ctx, cmd)
	if err == nil {
		w.metrics.applyLatency.Observe(time.Since(start).Seconds())
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
func (w *writer) propose(ctx context.Context, cmd fsm.Command) (*fsm.Result, error) {
	if err := w.checkServing(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var b []byte // the command's wire form, made once it must be forwarded
	return cluster.OnMaster(ctx, w.fwd(), func() (*fsm.Result, error) {
		res, err := w.applyLocal(ctx, cmd)
		if err != nil && res == nil {
			err = cluster.FirstProposal(err)
		}
		if errors.Is(err, raftnode.ErrClosed) && w.drain.stopping() {
			err = w.drain.errShuttingDown() // Raft stopped before it took the entry: nothing changed
		}
		return res, err
	}, func() (*fsm.Result, error) {
		if b == nil {
			var err error
			if b, err = fsm.Encode(cmd); err != nil {
				return nil, err
			}
		}
		var out cluster.ApplyResult
		var err error
		if w.batcher != nil && w.canBatch() {
			out, err = w.batcher.Apply(ctx, b)
		} else {
			out, err = w.fwd().Apply(ctx, b)
		}
		var re *cluster.RemoteError
		switch {
		case errors.As(err, &re) && re.E.Code == api.CodeConflict:
			return &fsm.Result{Version: re.E.Version}, &versionConflict{err: fmt.Errorf("%w: %s", fsm.ErrVersionConflict, re.E.Message), version: re.E.Version}
		case err != nil:
			return nil, err
		}
		return &fsm.Result{Index: out.Index, Version: out.Version, CID: out.CID}, nil
	})
}

// linearizableRead returns once the local state machine reflects every write
// acknowledged before the call: on the leader at once, on a follower once it has applied
// the leader's read index.
func (w *writer) linearizableRead(ctx context.Context) error {
	if err := w.checkServing(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, readTimeout)
	defer cancel()
	_, err := cluster.OnMaster(ctx, w.fwd(), func() (struct{}, error) {
		_, err := w.localReads.index(ctx)
		return struct{}{}, cluster.FirstProposal(err)
	}, func() (struct{}, error) {
		idx, err := w.remoteReads.index(ctx)
		if err != nil {
			return struct{}{}, err
		}
		return struct{}{}, w.raft().WaitApplied(ctx, idx)
	})
	return readFailed(err)
}
