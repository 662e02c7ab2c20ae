package daemon

import (
	"context"
	"fmt"
	"strings"

	"github.com/pmgcm/pmgcm/cluster"
	"github.com/pmgcm/pmgcm/fsm"
	"github.com/pmgcm/pmgcm/transport"
)

// What a member may ask of the master over the cluster RPC, beyond what mutual TLS with
// a current member's certificate already checks.
//
// A forwarded apply (cluster.PathApply) is what propose sends from a node that is not
// the master. Only these paths propose (the rest apply on the master itself, under
// the membership turn (memberTurn), after their own checks: admit, delete, the voter policy, forced recovery,
// sync, certificate records, the cluster version):
//   - config set and delete (ConfigSet, ConfigDelete), from any member;
//   - join-cmd --rotate and a delete through a master of the first release
//     (SetJoinToken), from any member; the token must derive from the CA key and the
//     command's salt, as every member makes it;
//   - the consistency check (branch ops-check: pmgcm check) marks an index by writing
//     the master's member record unchanged (UpdateMember), from any member;
//   - create and restore (CreateCluster, RestoreConfig) on a standalone node, which is
//     its own leader and never forwards.
//
// So the master applies a forwarded ConfigSet, ConfigDelete, derived SetJoinToken or
// UpdateMember that changes nothing (checked and applied in the membership turn, so that it
// cannot undo a change made meanwhile), and refuses every other command with
// ErrForbidden, changing nothing. The first release forwards only the first three
// kinds, so it is not affected.

// forwardGuard owns what a member may ask of the master beyond mutual TLS: the kinds of
// command it forwards, and that it records only its own certificate.
type forwardGuard struct{ fsm *fsm.FSM }

// newForwardGuard returns the guard of d, whose fsm is made.
func newForwardGuard(d *Daemon) *forwardGuard { return &forwardGuard{fsm: d.fsm} }

// checkForwarded refuses a command a member never forwards.
func (g *forwardGuard) checkForwarded(cmd fsm.Command) error {
	switch c := cmd.(type) {
	case fsm.ConfigSet, fsm.ConfigDelete:
		return nil
	case fsm.SetJoinToken:
		cl := g.fsm.Cluster()
		if cl == nil {
			return ErrNoCluster
		}
		if !tokenDerived(cl, c) {
			return fmt.Errorf("%w: a forwarded %s must set a token derived from the cluster's CA key and its salt", ErrForbidden, cmd.Type())
		}
		return nil
	case fsm.UpdateMember:
		cur, ok := g.fsm.Member(c.Member.CID)
		if !ok || !sameMember(cur, c.Member) {
			return fmt.Errorf("%w: a forwarded %s may only write a member's record unchanged (a member changes no other member's record)", ErrForbidden, cmd.Type())
		}
		return nil
	}
	return fmt.Errorf("%w: %s is never forwarded by a member (only configuration writes and join token rotations are); nothing was changed",
		ErrForbidden, cmd.Type())
}

// checkCertCaller refuses a certificate record that the caller (the member whose
// certificate the request's connection carries) makes for another member: a node
// records only its own certificate. A renewing node sends the record with the
// certificate it is replacing, the one the member list holds.
func (g *forwardGuard) checkCertCaller(ctx context.Context, req cluster.CertRecord) error {
	fp := transport.PeerFingerprintFromContext(ctx)
	caller, ok := g.fsm.MemberByFingerprint(fp)
	if !ok {
		return fmt.Errorf("%w: the caller's certificate (%s) is no member's: it may record only its own certificate",
			ErrForbidden, orNone(fp))
	}
	if caller.CID != req.CID {
		return fmt.Errorf("%w: cid %d (%s) asked to record a certificate for cid %d: a node records only its own certificate",
			ErrForbidden, caller.CID, caller.Name, req.CID)
	}
	return nil
}

func orNone(s string) string {
	if strings.TrimSpace(s) == "" {
		return "none"
	}
	return s
}

// sameMember reports whether two records of a member are the same.
func sameMember(a, b fsm.Member) bool {
	return a.CID == b.CID && a.Name == b.Name && a.IP == b.IP && a.Port == b.Port && a.Fingerprint == b.Fingerprint &&
		a.Suffrage == b.Suffrage && a.Epoch == b.Epoch && a.JoinedAt.Equal(b.JoinedAt)
}
