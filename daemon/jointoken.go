package daemon

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pmgcm/pmgcm/fsm"
	"github.com/pmgcm/pmgcm/internal/version"
)

// The join token's salt and its expiry.
//
// The token is HMAC(CA key, salt) (joinToken) and the replicated state holds the salt
// and the token's SHA-256 (fsm.Cluster.JoinTokenSalt, JoinTokenHash): the salt is opaque
// to the state machine, a byte string of at most 256 bytes, and the first release
// (1ca55cd) writes 16 random bytes. A token that expires has a salt of saltRandLen
// random bytes followed by the expiry, 8 bytes big-endian Unix seconds: so the expiry is
// covered by the HMAC (a token cannot be made to outlive it without the CA key), every
// member can show it, and neither the command nor the state format changes. A 1ca55cd
// node reads such a salt as it reads any other, prints the same token for it, and, as
// master, admits with it without looking at the expiry: expiry is enforced by masters of
// this build and later, so join-cmd makes such a token only when no member runs 0.1.0
// (creator.expiryEnforced).
const (
	saltRandLen   = 16
	saltExpiryLen = saltRandLen + 8
)

// levelEnforcesExpiry is the lowest feature level whose masters refuse an expired
// token: a token that expires is made (creator.expiryEnforced), and a node joins while
// one is set (versionKeeper.checkJoinLevel), only with every member at it or above.
const levelEnforcesExpiry = version.LevelClusterVersion

// noExpiryAdvice is the way forward where a token that expires cannot be used.
const noExpiryAdvice = "make a token that does not expire on a member (pmgcm join-cmd --rotate, without --ttl)"

// newTokenSalt returns a fresh salt, carrying expires unless it is zero.
func newTokenSalt(expires time.Time) ([]byte, error) {
	salt := make([]byte, saltRandLen, saltExpiryLen)
	if _, err := rand.Read(salt); err != nil {
		return nil, err
	}
	if !expires.IsZero() {
		salt = binary.BigEndian.AppendUint64(salt, uint64(expires.Unix()))
	}
	return salt, nil
}

// tokenExpiry returns the expiry a salt carries, and false for a token that never
// expires (a salt of the first release, or any other length).
func tokenExpiry(salt []byte) (time.Time, bool) {
	if len(salt) != saltExpiryLen {
		return time.Time{}, false
	}
	return time.Unix(int64(binary.BigEndian.Uint64(salt[saltRandLen:])), 0).UTC(), true
}

// checkJoinToken checks a joining node's token against the cluster's at now: wrong
// (ErrBadToken) or expired (ErrTokenExpired).
func checkJoinToken(cl *fsm.Cluster, token string, now time.Time) error {
	if subtle.ConstantTimeCompare(hashToken(token), cl.JoinTokenHash) != 1 {
		return ErrBadToken
	}
	if exp, ok := tokenExpiry(cl.JoinTokenSalt); ok && !now.Before(exp) {
		return fmt.Errorf("%w: it expired at %s", ErrTokenExpired, exp.Format(time.RFC3339))
	}
	return nil
}

// tokenDerived reports whether a SetJoinToken sets a token derived from the cluster's CA
// key and the command's salt, the only kind a member ever proposes (join-cmd --rotate,
// delete): not one that no member could show, nor joins disabled.
func tokenDerived(cl *fsm.Cluster, c fsm.SetJoinToken) bool {
	return len(c.Hash) > 0 && subtle.ConstantTimeCompare(c.Hash, hashToken(joinToken(cl.CAKeyPEM, c.Salt))) == 1
}

// tokenKeeper owns the rotation of the join token: by hand (join-cmd --rotate), and
// after a delete, on the master or after a master of the first release removed a member.
type tokenKeeper struct {
	fsm    *fsm.FSM
	logger hclog.Logger
	// writes commits the new token and waits to see it.
	writes *writer
}

// newTokenKeeper returns the token keeper of d, whose fsm and write path are made.
func newTokenKeeper(d *Daemon) *tokenKeeper {
	return &tokenKeeper{fsm: d.fsm, logger: d.logger, writes: d.writes}
}

// rotate commits a new join token, expiring at expires (zero: never), through
// the master, and returns once this node shows it.
func (t *tokenKeeper) rotate(ctx context.Context, expires time.Time) error {
	cl := t.fsm.Cluster()
	if cl == nil {
		return ErrNoCluster
	}
	salt, err := newTokenSalt(expires)
	if err != nil {
		return err
	}
	if _, err := t.writes.propose(ctx, &fsm.SetJoinToken{Hash: hashToken(joinToken(cl.CAKeyPEM, salt)), Salt: salt}); err != nil {
		return err
	}
	return t.writes.linearizableRead(ctx)
}

// rotateAfterDelete replaces the join token after a member was removed, on the master
// (in the membership turn): the removed node, which kept the CA key and the salt in its Raft
// state until it learned of its removal, could otherwise compute the token. The new
// token keeps the old one's expiry. It reports whether the token was rotated; a failure
// is logged, and the operator told to rotate by hand.
func (t *tokenKeeper) rotateAfterDelete(ctx context.Context, cid uint64) bool {
	cl := t.fsm.Cluster()
	if cl == nil || len(cl.JoinTokenHash) == 0 {
		return false // joins are disabled: there is no token to rotate
	}
	exp, _ := tokenExpiry(cl.JoinTokenSalt)
	salt, err := newTokenSalt(exp)
	if err == nil {
		_, err = t.writes.applyLocal(ctx, &fsm.SetJoinToken{Hash: hashToken(joinToken(cl.CAKeyPEM, salt)), Salt: salt})
	}
	if err != nil {
		t.logger.Warn("join token not rotated after a delete: run pmgcm join-cmd --rotate", "cid", cid, "error", err)
		return false
	}
	t.logger.Info("join token rotated after a delete", "cid", cid)
	return true
}

// rotateForwarded replaces the join token, keeping its expiry, after a master that does
// not rotate it (the first release) removed member cid at this node's request.
func (t *tokenKeeper) rotateForwarded(ctx context.Context, cid uint64) bool {
	cl := t.fsm.Cluster()
	if cl == nil || len(cl.JoinTokenHash) == 0 {
		return false
	}
	exp, _ := tokenExpiry(cl.JoinTokenSalt)
	if err := t.rotate(ctx, exp); err != nil {
		t.logger.Warn("join token not rotated after a delete: run pmgcm join-cmd --rotate", "cid", cid, "error", err)
		return false
	}
	t.logger.Info("join token rotated after a delete", "cid", cid)
	return true
}
