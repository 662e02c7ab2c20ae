package daemon

import (
	"errors"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/raftnode"
)

// ErrReadFailed is the error of a linearizable read that a master could not confirm: it
// lost its leadership or stopped while confirming it. Unlike a write whose answer was
// lost, a read changed nothing, so it is not an unknown outcome: it failed and can
// simply be retried.
var ErrReadFailed = errors.New("read failed: the master changed or stopped before it could confirm the read")

// readFailedHint is the hint of a read_failed answer.
const readFailedHint = "a read changes nothing: retry it (pmgcm status shows whether a master is up)"

// readError is a failed read: its chain holds ErrReadFailed and not the unknown outcome
// (or the other node's unknown_outcome answer) it came from, so that it is never
// answered as one.
type readError struct{ cause error }

func (e *readError) Error() string { return ErrReadFailed.Error() + ": " + e.cause.Error() }
func (e *readError) Unwrap() error { return ErrReadFailed }

// readFailed turns the unknown outcome of a read, here or answered by the master, into
// ErrReadFailed; other errors pass unchanged.
func readFailed(err error) error {
	if err == nil || !readOutcomeUnknown(err) {
		return err
	}
	return &readError{cause: err}
}

// readOutcomeUnknown reports whether err is an unknown outcome here or one answered by
// the node the read index was asked of (an error with that api code).
func readOutcomeUnknown(err error) bool {
	var coded interface{ Code() string }
	return errors.Is(err, raftnode.ErrUnknownOutcome) || (errors.As(err, &coded) && coded.Code() == api.CodeUnknownOutcome)
}
