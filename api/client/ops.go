package client

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"github.com/pmgcm/pmgcm/api"
)

// maxCheckLine bounds one line of the check stream: the report lists at most every
// difference of a quarantine; past this the answer is refused rather than held.
const maxCheckLine = 64 << 20

// Check runs the cross-node consistency check (verify: re-hash every body), calling
// progress (if not nil) with each progress line, and returns the report.
func (c *Client) Check(ctx context.Context, verify bool, progress func(api.CheckProgress)) (*api.CheckReport, error) {
	q := url.Values{}
	if verify {
		q.Set("verify", "1")
	}
	resp, err := c.doBody(ctx, http.MethodGet, api.PathCheck, q, nil, "")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), maxCheckLine)
	for sc.Scan() {
		var ev api.CheckEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return nil, fmt.Errorf("decoding answer of GET %s: %w", api.PathCheck, err)
		}
		switch {
		case ev.Error != nil:
			return nil, NewAPIError(http.StatusInternalServerError, *ev.Error)
		case ev.Report != nil:
			return ev.Report, nil
		case ev.Progress != nil && progress != nil:
			progress(*ev.Progress)
		}
	}
	err = sc.Err()
	if err == nil {
		err = io.ErrUnexpectedEOF
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return nil, err
	}
	return nil, fmt.Errorf("GET %s: the daemon ended the answer before the report: %w", api.PathCheck, err)
}

// Maintenance takes a node out of service (on) or back: this one with cid 0.
func (c *Client) Maintenance(ctx context.Context, on bool, cid uint64) (*api.MaintenanceResponse, error) {
	var out api.MaintenanceResponse
	return &out, c.postJSON(ctx, api.PathMaintenance, nil, api.MaintenanceRequest{On: on, CID: cid}, &out)
}

// EstimatedBody is the backup stream Backup returns: EstimatedSize says about how large
// it will be (0: unknown), from the daemon's api.HeaderSizeEstimate.
type EstimatedBody struct {
	io.ReadCloser
	estimate int64
}

// EstimatedSize returns about how many bytes the stream holds, 0 when unknown.
func (b *EstimatedBody) EstimatedSize() int64 { return b.estimate }

func newEstimatedBody(resp *http.Response) *EstimatedBody {
	n, _ := strconv.ParseInt(resp.Header.Get(api.HeaderSizeEstimate), 10, 64)
	return &EstimatedBody{ReadCloser: resp.Body, estimate: max(n, 0)}
}
