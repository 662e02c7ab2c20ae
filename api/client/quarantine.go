package client

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/pmgcm/pmgcm/api"
)

// QuarantineList lists the quarantined messages, newest first (GET api.PathQuarantine),
// those whose sender or recipients contain from and to and whose state is state; empty
// filters are not sent.
func (c *Client) QuarantineList(ctx context.Context, from, to, state string) ([]api.QuarantineMessage, error) {
	msgs := []api.QuarantineMessage{}
	err := c.QuarantineListEach(ctx, from, to, state, func(m api.QuarantineMessage) error {
		msgs = append(msgs, m)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return msgs, nil
}

// QuarantineShow returns the raw message id, headers and body, and its SHA-256 as the
// daemon stated it (GET api.PathQuarantineShow?id=ID, header api.HeaderSHA256). The
// message is checked against that checksum: a mismatch is an error, as the copy read is
// not the message that was stored.
func (c *Client) QuarantineShow(ctx context.Context, id string) ([]byte, string, error) {
	resp, err := c.do(ctx, http.MethodGet, api.PathQuarantineShow, url.Values{"id": {id}}, nil, "")
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	msg, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, "", fmt.Errorf("reading message %s: %w", id, err)
	}
	want := strings.ToLower(strings.TrimSpace(resp.Header.Get(api.HeaderSHA256)))
	if want == "" {
		return msg, "", nil
	}
	sum := sha256.Sum256(msg)
	if got := hex.EncodeToString(sum[:]); got != want {
		return nil, "", fmt.Errorf("message %s arrived corrupt: its SHA-256 is %s, the daemon stated %s", id, got, want)
	}
	return msg, want, nil
}

// QuarantineDelete deletes the message id on every node (POST api.PathQuarantineDelete)
// and returns it in its new state.
func (c *Client) QuarantineDelete(ctx context.Context, id string) (*api.QuarantineMessage, error) {
	return c.quarantineChange(ctx, api.PathQuarantineDelete, id)
}

// QuarantineRelease marks the message id released on every node
// (POST api.PathQuarantineRelease) and returns it in its new state.
func (c *Client) QuarantineRelease(ctx context.Context, id string) (*api.QuarantineMessage, error) {
	return c.quarantineChange(ctx, api.PathQuarantineRelease, id)
}

func (c *Client) quarantineChange(ctx context.Context, path, id string) (*api.QuarantineMessage, error) {
	var m api.QuarantineMessage
	if err := c.doJSON(ctx, http.MethodPost, path, url.Values{"id": {id}}, nil, &m); err != nil {
		return nil, err
	}
	return &m, nil
}
