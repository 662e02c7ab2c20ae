package cluster

import (
	"errors"
	"fmt"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/raftnode"
)

// Sentinel errors of the protocol.
var (
	// ErrIncompatible means two nodes speak protocol versions or state formats that
	// cannot work together.
	ErrIncompatible = errors.New("incompatible pmgcm versions")
	// ErrBadRequest means a request body could not be decoded (malformed, or larger
	// than MaxRequestBytes). It is answered with HTTP 400.
	ErrBadRequest = errors.New("bad cluster request")
	// ErrSelfLeader tells a caller of Forwarder.CallLeader that this node itself is the
	// master now: act locally.
	ErrSelfLeader = errors.New("this node is the master")
	// ErrLostMaster tells OnMaster that this node stopped being the master before the
	// operation proposed anything: nothing changed, and the new master may take it.
	ErrLostMaster = errors.New("this node stopped being the master before it changed anything")
	// ErrShuttingDown means the node is stopping and refused the request before it
	// changed anything (api.CodeShuttingDown): the request may go to another node.
	ErrShuttingDown = errors.New("this node is shutting down and took nothing of the request")
)

// RemoteError is an error answered by another node (or the failure to reach it), kept
// with its api code so that the control socket passes it on unchanged.
type RemoteError struct {
	// Status is the HTTP status the other node answered (502 when it was not reached).
	Status int
	// E is the other node's api error.
	E api.Error
	// NotSent is true when the request never reached the other node whole (no
	// connection was made, or writing it failed): retrying it cannot apply it twice.
	NotSent bool
}

// Error returns the other node's message.
func (e *RemoteError) Error() string { return e.E.Message }

// Code is the api error code the other node answered.
func (e *RemoteError) Code() string { return e.E.Code }

// Code returns the api code of an error answered by another node, "" for any other.
func Code(err error) string {
	var re *RemoteError
	if errors.As(err, &re) {
		return re.E.Code
	}
	return ""
}

// UnknownOutcome reports whether err says a request may or may not have taken effect,
// here or on the node that answered it.
func UnknownOutcome(err error) bool {
	return errors.Is(err, raftnode.ErrUnknownOutcome) || Code(err) == api.CodeUnknownOutcome
}

// NotProposed reports whether err says this node stopped leading before it proposed
// anything: the request may go to the master instead.
func NotProposed(err error) bool {
	return errors.Is(err, raftnode.ErrNotLeader) || errors.Is(err, raftnode.ErrNoLeader)
}

// FirstProposal marks err, from an operation's first proposal, with ErrLostMaster when
// that proposal never happened because this node is no longer the master.
func FirstProposal(err error) error {
	if NotProposed(err) {
		return fmt.Errorf("%w: %w", ErrLostMaster, err)
	}
	return err
}
