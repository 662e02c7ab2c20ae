package client

import (
	"context"
	"io"

	"github.com/pmgcm/pmgcm/api"
)

// Report streams the diagnostics bundle (tar.gz) from the daemon. The caller closes it.
func (c *Client) Report(ctx context.Context) (io.ReadCloser, error) {
	resp, err := c.doBody(ctx, "GET", api.PathReport, nil, nil, "")
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}
