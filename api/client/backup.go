package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/pmgcm/pmgcm/api"
)

// Backup streams a backup file from the daemon. The caller closes it.
func (c *Client) Backup(ctx context.Context, withMail bool) (io.ReadCloser, error) {
	q := url.Values{}
	if withMail {
		q.Set("mail", "1")
	}
	resp, err := c.doBody(ctx, "GET", api.PathBackup, q, nil, "")
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// Restore streams a backup file to the daemon.
func (c *Client) Restore(ctx context.Context, r io.Reader) (*api.RestoreResponse, error) {
	resp, err := c.doBody(ctx, "POST", api.PathRestore, nil, r, "application/octet-stream")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var out api.RestoreResponse
	return &out, decodeJSON(resp.Body, &out, "POST", api.PathRestore)
}

// doBody sends one request with a streamed body and returns the answer for the caller to
// read and close. A non-2xx answer is closed and returned as *APIError; a failure to
// connect wraps ErrUnreachable.
func (c *Client) doBody(ctx context.Context, method, path string, q url.Values, body io.Reader, ctype string) (*http.Response, error) {
	u := url.URL{Scheme: "http", Host: "pmgcm", Path: path, RawQuery: q.Encode()}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.userAgent)
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, c.transportError(method, path, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		defer resp.Body.Close()
		return nil, decodeAPIError(resp)
	}
	return resp, nil
}

func decodeJSON(r io.Reader, out any, method, path string) error {
	if err := json.NewDecoder(r).Decode(out); err != nil {
		return fmt.Errorf("decoding answer of %s %s: %w", method, path, err)
	}
	return nil
}
