package daemon

import (
	"context"
	"errors"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/cluster"
	"github.com/pmgcm/pmgcm/fsm"
	"github.com/pmgcm/pmgcm/raftnode"
	"github.com/pmgcm/pmgcm/transport"
)

// rpcHandler is the daemon's side of the node-to-node protocol: cluster.Service
// dispatches every request of the cluster RPC and join channels to it.
type rpcHandler struct{ d *Daemon }

var _ cluster.Handler = rpcHandler{}

func (h rpcHandler) NodeInfo() api.Node { return h.d.stat.localNode() }

// Apply applies a command a member forwarded: only the kinds members forward
// (checkForwarded).
func (h rpcHandler) Apply(ctx context.Context, cmd fsm.Command) (cluster.ApplyResult, error) {
	if !h.d.drain.forwarded.enter() {
		return cluster.ApplyResult{}, h.d.drain.errShuttingDown() // before proposing: the forwarder sends it to the next master
	}
	defer h.d.drain.forwarded.leave()
	if _, ok := cmd.(fsm.UpdateMember); ok {
		// Membership changes on the master are serialized: the record checked unchanged
		// stays so until it is applied.
		release, err := h.d.memberTurn.take(ctx)
		if err != nil {
			return cluster.ApplyResult{}, err
		}
		defer release()
	}
	if err := h.d.guard.checkForwarded(cmd); err != nil {
		h.d.logger.Warn("refused a forwarded command", "command", cmd.Type().String(),
			"caller", transport.PeerFingerprintFromContext(ctx), "error", err)
		return cluster.ApplyResult{}, err
	}
	res, err := h.d.writes.applyLocal(ctx, cmd)
	if err != nil {
		if errors.Is(err, fsm.ErrVersionConflict) && res != nil {
			err = &versionConflict{err: err, version: res.Version}
		}
		if errors.Is(err, raftnode.ErrClosed) && h.d.drain.stopping() {
			// Raft stopped before it took the entry (an appended one is an unknown outcome,
			// not ErrClosed): nothing changed, the forwarder may send it to the next master.
			err = h.d.drain.errShuttingDown()
		}
		return cluster.ApplyResult{}, err
	}
	return cluster.ApplyResult{Index: res.Index, Version: res.Version, CID: res.CID}, nil
}

// ReadIndex answers a member's read-index request, in a round shared with this node's
// own linearizable reads and the other members' requests (readBatch).
func (h rpcHandler) ReadIndex(ctx context.Context) (uint64, error) {
	return h.d.writes.localReads.index(ctx)
}

// Admit on the join channel (relay) forwards to the master; the forwarded form
// (cluster.PathAdmit) is not forwarded again: a node that is no longer master says so,
// and the member that forwarded it, which knows whether its earlier attempt may have
// gone through, tries the new master itself.
func (h rpcHandler) Admit(ctx context.Context, req cluster.AdmitRequest, relay bool) (*cluster.Admission, error) {
	return h.d.admitter.admit(ctx, req, relay)
}

func (h rpcHandler) Delete(ctx context.Context, cid uint64) (*api.DeleteResponse, error) {
	return h.d.memberOps.deleteMember(ctx, cid, false)
}

func (h rpcHandler) Transfer(ctx context.Context, cid uint64) error {
	return h.d.promoter.transferTo(ctx, cid)
}

// RecordCert records the caller's own renewed certificate (checkCertCaller), on the
// master only: forwarded on, it would reach the master with this node's certificate, not
// the caller's. A caller that reached a node no longer master is told so and asks the
// new master itself.
func (h rpcHandler) RecordCert(ctx context.Context, req cluster.CertRecord) (uint64, error) {
	if err := h.d.guard.checkCertCaller(ctx, req); err != nil {
		return 0, err
	}
	return cluster.OnMaster(ctx, h.d.fwd, func() (uint64, error) { return h.d.certs.recordHere(ctx, req) },
		func() (uint64, error) { return 0, h.d.rn().NotLeader() })
}

func (h rpcHandler) RenewCert(ctx context.Context) (api.RenewedCert, error) {
	return h.d.certs.renew(ctx)
}

// JoinInfo and CheckMembership answer on the join channel, to callers with no
// certificate: they tell only what a joining node's fingerprint prompt and a node's own
// standing check need (see unauthenticated.go).
func (h rpcHandler) JoinInfo() cluster.JoinInfo { return maskJoinInfo(h.d.joiner.joinInfo()) }

func (h rpcHandler) CheckMembership(fingerprint string) cluster.Membership {
	return maskMembership(h.d.members.membership(fingerprint))
}
