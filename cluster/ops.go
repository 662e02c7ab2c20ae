package cluster

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/fsm"
	"github.com/pmgcm/pmgcm/mailstore"
)

// Paths of the operator tools on the cluster RPC channel. A node of the first release
// (1ca55cd) answers 404 for them: see NotSupported.
const (
	// PathCheckState answers GET ?index=N&wait=D with StateCheck: the digest of the
	// node's state machine at index N, waiting up to D for the node to reach it.
	PathCheckState = "/rpc/v1/check/state"
	// PathCheckMail answers GET ?since=UNIXNANO[&verify=1][&bucket=B] with MailCheck.
	PathCheckMail = "/rpc/v1/check/mail"
	// PathMaintenance takes POST MaintenanceRequest: take that node out of service or
	// back; it answers api.MaintenanceResponse.
	PathMaintenance = "/rpc/v1/maintenance"
)

// StateCheck is the answer of PathCheckState.
type StateCheck struct {
	fsm.StateHash
	// Applied is the node's applied index when it answered.
	Applied uint64 `json:"applied"`
}

// MailCheck is the answer of PathCheckMail: the node's digest, and the entries of the
// bucket asked for, if one was. MaxResponseBytes bounds it: one bucket of about 80,000
// entries of 100 bytes, a quarantine of some 20 million messages.
type MailCheck struct {
	Digest  mailstore.CheckDigest  `json:"digest"`
	Entries []mailstore.CheckEntry `json:"entries,omitempty"`
}

// MailCheckRequest says what PathCheckMail covers.
type MailCheckRequest struct {
	Since  time.Time
	Verify bool
	// Bucket is the bucket whose entries to list, -1 for none.
	Bucket int
}

// MaintenanceRequest is the body of PathMaintenance.
type MaintenanceRequest struct {
	On bool `json:"on"`
}

// OpsHandler is what the Service needs of a node for the operator tools. A Handler that
// implements it gets their paths served.
type OpsHandler interface {
	// CheckState returns the digest of the state machine at index, waiting until ctx
	// ends for the node to reach it.
	CheckState(ctx context.Context, index uint64) (StateCheck, error)
	// CheckMail digests the node's live messages.
	CheckMail(ctx context.Context, req MailCheckRequest) (MailCheck, error)
	// SetMaintenance takes the node out of service or back.
	SetMaintenance(ctx context.Context, on bool) (api.MaintenanceResponse, error)
}

// registerOps serves the operator tools' paths.
func (s *Service) registerOps(h OpsHandler) {
	s.rpc.HandleFunc("GET "+PathCheckState, func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		idx, err := strconv.ParseUint(q.Get("index"), 10, 64)
		wait, werr := time.ParseDuration(q.Get("wait"))
		if err != nil || werr != nil || wait < 0 || wait > 10*time.Minute {
			s.writeErr(w, fmt.Errorf("%w: index %q, wait %q", ErrBadRequest, q.Get("index"), q.Get("wait")))
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), wait)
		defer cancel()
		out, err := h.CheckState(ctx, idx)
		s.reply(w, out, err)
	})
	s.rpc.HandleFunc("GET "+PathCheckMail, func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		req := MailCheckRequest{Verify: q.Get("verify") == "1", Bucket: -1}
		since, err := strconv.ParseInt(q.Get("since"), 10, 64)
		if err == nil && q.Get("bucket") != "" {
			req.Bucket, err = strconv.Atoi(q.Get("bucket"))
			if err == nil && (req.Bucket < 0 || req.Bucket >= mailstore.CheckBuckets) {
				err = errors.New("out of range")
			}
		}
		if err != nil {
			s.writeErr(w, fmt.Errorf("%w: since %q, bucket %q: %v", ErrBadRequest, q.Get("since"), q.Get("bucket"), err))
			return
		}
		if since > 0 {
			req.Since = time.Unix(0, since)
		}
		out, err := h.CheckMail(r.Context(), req)
		s.reply(w, out, err)
	})
	s.rpc.HandleFunc("POST "+PathMaintenance, func(w http.ResponseWriter, r *http.Request) {
		var req MaintenanceRequest
		if s.decode(w, r, &req) {
			out, err := h.SetMaintenance(r.Context(), req.On)
			s.reply(w, out, err)
		}
	})
}

// NotSupported reports whether err is the answer of a node that does not know the path
// it was asked (a node of an older version): the feature is not available on it.
func NotSupported(err error) bool {
	var re *RemoteError
	return errors.As(err, &re) && (re.Status == http.StatusNotFound || re.Status == http.StatusMethodNotAllowed) &&
		re.E.Code != api.CodeNotFound
}

// CheckState asks the node at addr for the digest of its state machine at index,
// letting it wait up to wait to reach it (PathCheckState).
func (c *Client) CheckState(ctx context.Context, addr string, index uint64, wait time.Duration) (StateCheck, error) {
	var out StateCheck
	q := url.Values{"index": {strconv.FormatUint(index, 10)}, "wait": {wait.String()}}
	err := c.Call(ctx, addr, http.MethodGet, PathCheckState+"?"+q.Encode(), nil, &out)
	return out, err
}

// CheckMail asks the node at addr for the digest of its live messages (PathCheckMail).
func (c *Client) CheckMail(ctx context.Context, addr string, req MailCheckRequest) (MailCheck, error) {
	var out MailCheck
	q := url.Values{"since": {"0"}}
	if !req.Since.IsZero() {
		q.Set("since", strconv.FormatInt(req.Since.UnixNano(), 10))
	}
	if req.Verify {
		q.Set("verify", "1")
	}
	if req.Bucket >= 0 {
		q.Set("bucket", strconv.Itoa(req.Bucket))
	}
	err := c.Call(ctx, addr, http.MethodGet, PathCheckMail+"?"+q.Encode(), nil, &out)
	return out, err
}

// SetMaintenance asks the node at addr to leave service (on) or come back
// (PathMaintenance).
func (c *Client) SetMaintenance(ctx context.Context, addr string, on bool) (api.MaintenanceResponse, error) {
	var out api.MaintenanceResponse
	err := c.Call(ctx, addr, http.MethodPost, PathMaintenance, MaintenanceRequest{On: on}, &out)
	return out, err
}
