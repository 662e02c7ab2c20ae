package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"sync/atomic"

	"github.com/pmgcm/pmgcm/api"
)

// Client sends the protocol's requests over one http.Client: the mux's ChanRPC client
// for member-to-member requests, a pinned or the mux's ChanJoin client for the join
// channel. Every method takes the peer's "ip:port"; bound each call with ctx. A node
// that cannot be reached yields a *RemoteError with code api.CodeUnreachable (NotSent
// when no connection was made); an answered error yields a *RemoteError with the other
// node's code.
type Client struct {
	hc *http.Client
}

// NewClient returns a Client over hc.
func NewClient(hc *http.Client) *Client { return &Client{hc: hc} }

// CloseIdleConnections drops the pooled connections (after an identity change).
func (c *Client) CloseIdleConnections() { c.hc.CloseIdleConnections() }

// Node asks the node at addr for its own status row (PathNode).
func (c *Client) Node(ctx context.Context, addr string) (api.Node, error) {
	var n api.Node
	err := c.Call(ctx, addr, http.MethodGet, PathNode, nil, &n)
	return n, err
}

// Apply sends an fsm-encoded command to the master at addr (PathApply).
func (c *Client) Apply(ctx context.Context, addr string, cmd []byte) (ApplyResult, error) {
	var out ApplyResult
	err := c.Call(ctx, addr, http.MethodPost, PathApply, cmd, &out)
	return out, err
}

// ReadIndex asks the master at addr for its confirmed commit index (PathReadIndex).
func (c *Client) ReadIndex(ctx context.Context, addr string) (uint64, error) {
	var out ReadIndexResult
	err := c.Call(ctx, addr, http.MethodGet, PathReadIndex, nil, &out)
	return out.Index, err
}

// Admit forwards a join request to the master at addr (PathAdmit).
func (c *Client) Admit(ctx context.Context, addr string, req AdmitRequest) (Admission, error) {
	var out Admission
	err := c.Call(ctx, addr, http.MethodPost, PathAdmit, req, &out)
	return out, err
}

// Readmit forwards the re-admission of the fenced member with certificate
// req.Fingerprint, of build req.Version and req.Level, to the master at addr
// (PathReadmit).
func (c *Client) Readmit(ctx context.Context, addr string, req ReadmitRequest) (Admission, error) {
	var out Admission
	err := c.Call(ctx, addr, http.MethodPost, PathReadmit, req, &out)
	return out, err
}

// Delete asks the master at addr to remove member cid (PathDelete).
func (c *Client) Delete(ctx context.Context, addr string, cid uint64) (api.DeleteResponse, error) {
	var out api.DeleteResponse
	err := c.Call(ctx, addr, http.MethodPost, PathDelete, api.DeleteRequest{CID: cid}, &out)
	return out, err
}

// Transfer asks the master at addr to hand leadership to member cid (PathTransfer).
func (c *Client) Transfer(ctx context.Context, addr string, cid uint64) error {
	return c.Call(ctx, addr, http.MethodPost, PathTransfer, TransferRequest{CID: cid}, nil)
}

// RecordCert asks the master at addr to publish a renewed certificate (PathRecordCert)
// and returns the state-machine index of the change.
func (c *Client) RecordCert(ctx context.Context, addr string, req CertRecord) (uint64, error) {
	var out ApplyResult
	err := c.Call(ctx, addr, http.MethodPost, PathRecordCert, req, &out)
	return out.Index, err
}

// RenewCert asks the member at addr to renew its own certificate (PathRenewCert);
// rc is filled with its answer.
func (c *Client) RenewCert(ctx context.Context, addr string, rc *api.RenewedCert) error {
	return c.Call(ctx, addr, http.MethodPost, PathRenewCert, nil, rc)
}

// JoinInfo asks the node at addr about itself (JoinPathInfo).
func (c *Client) JoinInfo(ctx context.Context, addr string) (JoinInfo, error) {
	var out JoinInfo
	err := c.Call(ctx, addr, http.MethodGet, JoinPathInfo, nil, &out)
	return out, err
}

// JoinAdmit asks the node at addr to admit this node (JoinPathAdmit).
func (c *Client) JoinAdmit(ctx context.Context, addr string, req AdmitRequest) (Admission, error) {
	var out Admission
	err := c.Call(ctx, addr, http.MethodPost, JoinPathAdmit, req, &out)
	return out, err
}

// CheckMembership asks the node at addr how it sees the certificate fingerprint
// (JoinPathMembership).
func (c *Client) CheckMembership(ctx context.Context, addr, fingerprint string) (Membership, error) {
	var out Membership
	err := c.Call(ctx, addr, http.MethodPost, JoinPathMembership, FingerprintRequest{Fingerprint: fingerprint}, &out)
	return out, err
}

// JoinReadmit asks the node at addr to take this fenced node, of build version and
// level, back (JoinPathReadmit); the Client must present this node's own certificate.
func (c *Client) JoinReadmit(ctx context.Context, addr, version string, level int) (Admission, error) {
	var out Admission
	err := c.Call(ctx, addr, http.MethodPost, JoinPathReadmit, ReadmitRequest{Version: version, Level: level}, &out)
	return out, err
}

// Call sends one request to the node at addr and decodes the JSON answer into out (if
// not nil). in is JSON-encoded unless it is a []byte.
func (c *Client) Call(ctx context.Context, addr, method, path string, in, out any) error {
	var body io.Reader
	switch v := in.(type) {
	case nil:
	case []byte:
		body = bytes.NewReader(v)
	default:
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	// The request counts as sent once it has been written whole on some connection: a
	// node cannot act on a request it did not receive whole, and a pooled connection
	// that the other node closed (it stopped) fails before that, as does a refused dial.
	var wrote atomic.Bool
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{WroteRequest: func(i httptrace.WroteRequestInfo) {
		if i.Err == nil {
			wrote.Store(true)
		}
	}})
	req, err := http.NewRequestWithContext(ctx, method, "http://"+addr+path, body)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return &RemoteError{Status: http.StatusBadGateway, NotSent: !wrote.Load(), E: api.Error{
			Code: api.CodeUnreachable, Message: fmt.Sprintf("cannot reach the node at %s: %v", addr, UnwrapURLError(err)),
		}}
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		var e api.Error
		if err := json.NewDecoder(io.LimitReader(resp.Body, MaxResponseBytes)).Decode(&e); err != nil || e.Message == "" {
			e = api.Error{Code: api.CodeInternal, Message: fmt.Sprintf("node at %s answered %s", addr, resp.Status)}
		}
		return &RemoteError{Status: resp.StatusCode, E: e}
	}
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, MaxResponseBytes)).Decode(out); err != nil {
		return fmt.Errorf("the answer of the node at %s to %s: %w", addr, path, err)
	}
	return nil
}

// UnwrapURLError returns the error inside a *url.Error (or any single-error wrapper),
// without the method and URL that repeat what the caller says.
func UnwrapURLError(err error) error {
	var ue interface{ Unwrap() error }
	if errors.As(err, &ue) {
		if inner := ue.Unwrap(); inner != nil {
			return inner
		}
	}
	return err
}
