package daemon

import (
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"testing"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/raftnode"
)

// TestRaftErrorCodes: a proposal raftnode reports as never appended (ErrTimeout,
// ErrNoLeader) is answered no_quorum, which the forwarding loop sends again; one that may
// have been appended (ErrUnknownOutcome) is unknown_outcome, also when the error wraps a
// timeout or a lost leader as well, so that it is never sent again.
func TestRaftErrorCodes(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("%w: timed out enqueuing operation", raftnode.ErrTimeout), api.CodeNoQuorum},
		{raftnode.ErrNoLeader, api.CodeNoQuorum},
		{fmt.Errorf("%w: entry 9 was appended but not known to commit", raftnode.ErrUnknownOutcome), api.CodeUnknownOutcome},
		{fmt.Errorf("%w (%w)", raftnode.ErrUnknownOutcome, raftnode.ErrTimeout), api.CodeUnknownOutcome},
		{fmt.Errorf("%w (%w)", raftnode.ErrNoLeader, raftnode.ErrUnknownOutcome), api.CodeUnknownOutcome},
		{fmt.Errorf("leadership transfer to cid 3: %w: leadership transfer timeout", raftnode.ErrTransferFailed), api.CodeUnavailable},
	} {
		rec := httptest.NewRecorder()
		writeErr(rec, tc.err)
		var e api.Error
		if err := json.NewDecoder(rec.Body).Decode(&e); err != nil {
			t.Fatal(err)
		}
		if e.Code != tc.want {
			t.Errorf("writeErr(%v): code %q, want %q", tc.err, e.Code, tc.want)
		}
	}
}
