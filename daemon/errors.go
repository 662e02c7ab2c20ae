package daemon

import (
	"errors"

	"github.com/pmgcm/pmgcm/cluster"
)

// Sentinel errors of the daemon. Each message names the problem; the wrapping error adds
// the path and what the operator can do.
var (
	// ErrDataDirInUse means another pmgclusterd holds the data directory.
	ErrDataDirInUse = errors.New("data directory is in use by another pmgclusterd")
	// ErrDataDirUnreadable means the data directory cannot be read or written.
	ErrDataDirUnreadable = errors.New("data directory is not accessible")
	// ErrCorruptData means a data file failed its integrity checks.
	ErrCorruptData = errors.New("data file is corrupt")
	// ErrAddressChanged means --ip or --port differ from the address the node was set up with.
	ErrAddressChanged = errors.New("node address cannot change")
	// ErrSocketInUse means another daemon answers on the control socket.
	ErrSocketInUse = errors.New("control socket is in use by another pmgclusterd")
	// ErrSocketPath means the --socket path holds something that is not a socket (a
	// file, a directory, a link), which the daemon never removes.
	ErrSocketPath = errors.New("control socket path is taken by something that is not a socket")
	// ErrClusterExists means the node is already in a cluster.
	ErrClusterExists = errors.New("this node is already in a cluster")
	// ErrRemoved means this node was deleted from its cluster and serves none of its data.
	ErrRemoved = errors.New("node removed from the cluster")
	// ErrFenced means a forced promotion elsewhere superseded this node.
	ErrFenced = errors.New("this node was superseded by a forced promotion and is fenced")
	// ErrBehind means another node holds a longer log than this one.
	ErrBehind = errors.New("another node has a longer log")
	// ErrSyncing means this node has not received all of the cluster's data yet.
	ErrSyncing = errors.New("this node is still receiving data from the other nodes")
	// ErrBadToken means the join token was wrong.
	ErrBadToken = errors.New("join token is not valid for this cluster")
	// ErrTokenExpired means the join token was right but has expired (join-cmd --ttl).
	ErrTokenExpired = errors.New("join token has expired")
	// ErrThrottled means a source address gave too many wrong join tokens and is refused
	// for a while.
	ErrThrottled = errors.New("too many wrong join tokens from this address")
	// ErrForbidden means a member asked for what members may not ask: a command no
	// member forwards, or a change to another member's record.
	ErrForbidden = errors.New("refused: members may not ask this")
	// ErrIncompatible means two nodes run versions that cannot work together (the
	// protocol's own sentinel, cluster.ErrIncompatible).
	ErrIncompatible = cluster.ErrIncompatible
	// ErrNotMaster means an operation was refused because of which node is the master.
	ErrNotMaster = errors.New("refused on the master")
	// ErrBusy means another operation that changes this node's identity is under way,
	// or, on the master, that a membership change gave up waiting for the one before it
	// (memberTurn); nothing was changed, and it may be tried again.
	ErrBusy = errors.New("this node is busy")
	// ErrMemberUnreachable means an operation that needs an answer from every member did
	// not get one.
	ErrMemberUnreachable = errors.New("a member did not answer")
	// ErrPromotionPending means a forced promotion made this node the only voter but
	// could not commit its new epoch before the deadline; the pending epoch is recorded
	// and a restart of pmgclusterd finishes it (finishPendingEpoch): HTTP 503.
	ErrPromotionPending = errors.New("forced promotion not finished")
	// ErrBadRequest means the request itself is malformed or names something that
	// cannot be (an address that is no IP, a certificate of another CA): HTTP 400.
	ErrBadRequest = errors.New("bad request")
	// ErrNoCluster means the operation needs a cluster and the node is in none.
	ErrNoCluster = errors.New("no cluster defined")
)
