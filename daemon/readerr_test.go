package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/raftnode"
)

// TestFailedReadIsNotAnUnknownOutcome: a read the master could not confirm (leadership
// lost here, or the master answered unknown_outcome to a forwarded read index) is
// answered read_failed with a hint to retry, not with the write's advice to check
// whether it took effect.
func TestFailedReadIsNotAnUnknownOutcome(t *testing.T) {
	remote := codedError{api.CodeUnknownOutcome} // as another node answers it
	for _, cause := range []error{raftnode.ErrUnknownOutcome, fmt.Errorf("read index: %w", remote)} {
		err := readFailed(cause)
		if !errors.Is(err, ErrReadFailed) || readOutcomeUnknown(err) || errors.Is(err, raftnode.ErrUnknownOutcome) {
			t.Fatalf("readFailed(%v) = %v: ErrReadFailed %v, still an unknown outcome %v", cause, err, errors.Is(err, ErrReadFailed), readOutcomeUnknown(err))
		}
		rec := httptest.NewRecorder()
		writeErr(rec, err)
		var e api.Error
		if err := json.NewDecoder(rec.Body).Decode(&e); err != nil {
			t.Fatal(err)
		}
		if e.Code != api.CodeReadFailed || !strings.Contains(e.Hint, "retry") || strings.Contains(e.Hint, "took effect") ||
			!strings.HasPrefix(e.Message, "read failed") {
			t.Errorf("a failed read (%v) was answered %d %+v", cause, rec.Code, e)
		}
	}
	for _, err := range []error{nil, raftnode.ErrNoLeader, raftnode.ErrTimeout} {
		if got := readFailed(err); got != err {
			t.Errorf("readFailed(%v) = %v, want it unchanged", err, got)
		}
	}
}

// codedError is an error with an api code, like the answer of another node.
type codedError struct{ code string }

func (e codedError) Error() string { return "the other node answered " + e.code }
func (e codedError) Code() string  { return e.code }
