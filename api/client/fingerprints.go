package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/pmgcm/pmgcm/api"
)

// UpdateFingerprints renews this node's certificate, or with all every node's (on the
// master only), and publishes the new fingerprints (POST api.PathUpdateFingerprints).
func (c *Client) UpdateFingerprints(ctx context.Context, all bool) (*api.UpdateFingerprintsResponse, error) {
	var q url.Values
	if all {
		q = url.Values{"all": {"1"}}
	}
	var out api.UpdateFingerprintsResponse
	if err := c.doJSON(ctx, http.MethodPost, api.PathUpdateFingerprints, q, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
