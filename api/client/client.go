// Package client is the Go client of pmgclusterd's control socket: the HTTP+JSON API over
// a unix socket whose paths and types package api defines. The pmgcm CLI (package cli) and
// the benchmark (cmd/pmgcm-bench) use it, and so do the integration tests.
//
// It owns the requests, the decoding of the answers (an *APIError for a non-2xx answer,
// ErrUnreachable when the socket cannot be reached) and nothing else. Of this project it
// imports only package api and internal/synchttp (its HTTP transport, which imports
// nothing of this project); it must never import daemon or any other daemon package, so
// that the CLI stays a client of the socket.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"syscall"
	"time"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/internal/synchttp"
)

// ErrUnreachable is wrapped by the error a Client returns when it cannot connect to the
// daemon's socket (missing socket, connection refused, permission denied).
var ErrUnreachable = errors.New("cannot reach pmgclusterd")

// maxErrorBody bounds how much of a non-2xx answer is read.
const maxErrorBody = 1 << 20

// defaultUserAgent is the User-Agent of a Client made without WithUserAgent.
const defaultUserAgent = "pmgcm-client"

// ReadOptions choose the consistency of a configuration read.
type ReadOptions struct {
	// Stale serves the read from the node's own state (stale=1) instead of a read
	// confirmed by the master: it works without quorum but may miss recent writes.
	Stale bool
}

// ReadInfo is what the daemon says about how a read was served.
type ReadInfo struct {
	// Stale is true when the node served the read from its own state (api.HeaderStale);
	// the other fields are set only then.
	Stale bool
	// AppliedIndex is the node's applied index at the read (api.HeaderAppliedIndex).
	AppliedIndex uint64
	// LastContact is the time since the node last heard from a master, as the daemon
	// wrote it: a Go duration ("0s" on the master) or "never" (api.HeaderLastContact).
	LastContact string
}

// ConfigValue is the answer of ConfigGet.
type ConfigValue struct {
	Value   []byte
	Version uint64
	Read    ReadInfo
}

// WriteOptions make a configuration write conditional.
type WriteOptions struct {
	// IfVersion, when set, makes the write a compare-and-set: it applies only while the
	// key's version is *IfVersion (0: only while the key is absent); otherwise the daemon
	// answers api.CodeConflict and changes nothing. Nil writes unconditionally.
	IfVersion *uint64
}

// query returns the parameters of the write options, added to q.
func (o WriteOptions) query(q url.Values) url.Values {
	if o.IfVersion != nil {
		q.Set("if_version", strconv.FormatUint(*o.IfVersion, 10))
	}
	return q
}

// query returns the parameters of the read options, added to q (which may be nil).
func (o ReadOptions) query(q url.Values) url.Values {
	if o.Stale {
		if q == nil {
			q = url.Values{}
		}
		q.Set("stale", "1")
	}
	return q
}

// readInfo reads the stale-read headers of an answer.
func readInfo(h http.Header) (ReadInfo, error) {
	if h.Get(api.HeaderStale) != "1" {
		return ReadInfo{}, nil
	}
	s := h.Get(api.HeaderAppliedIndex)
	idx, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return ReadInfo{}, fmt.Errorf("daemon answered with a bad %s header %q", api.HeaderAppliedIndex, s)
	}
	contact := h.Get(api.HeaderLastContact)
	if contact == "" {
		contact = "unknown"
	}
	return ReadInfo{Stale: true, AppliedIndex: idx, LastContact: contact}, nil
}

// APIError is a non-2xx answer of the daemon: the HTTP status and the decoded api.Error,
// whose fields Code, Message and Hint it promotes.
type APIError struct {
	// Status is the HTTP status code.
	Status int
	wireError
}

// wireError lets APIError embed api.Error: a field named Error would clash with the Error
// method that makes APIError an error.
type wireError = api.Error

// Error returns the daemon's message, followed by its hint on a new line when there is one.
func (e *APIError) Error() string {
	if e.Hint != "" {
		return e.Message + "\n" + e.Hint
	}
	return e.Message
}

// Client talks HTTP+JSON to pmgclusterd over its unix control socket. It is safe for
// concurrent use. Request deadlines come from the ctx of each call.
type Client struct {
	socketPath string
	hc         *http.Client
	userAgent  string
}

// Option changes a Client made by New.
type Option func(*Client)

// WithUserAgent sets the User-Agent header of every request (the daemon may log it);
// pmgcm sends "pmgcm/VERSION".
func WithUserAgent(ua string) Option {
	return func(c *Client) { c.userAgent = ua }
}

// New returns a Client for the daemon listening on socketPath. It does no I/O.
func New(socketPath string, opts ...Option) *Client {
	dial := func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socketPath)
	}
	tr := &http.Transport{
		DialContext:        func(ctx context.Context, _, _ string) (net.Conn, error) { return dial(ctx) },
		DisableCompression: true,
		MaxIdleConns:       2,
		IdleConnTimeout:    idleTimeout,
	}
	// Small requests (all but restore uploads) are sent on the calling goroutine. Idle
	// connections are dropped before the daemon drops them (after 10 s), so that a write
	// is not sent on a connection the daemon is closing.
	st := &synchttp.Transport{
		Dial:           func(ctx context.Context, _ string) (net.Conn, error) { return dial(ctx) },
		Fallback:       tr,
		MaxIdlePerHost: 2,
		IdleTimeout:    idleTimeout,
	}
	c := &Client{socketPath: socketPath, hc: &http.Client{Transport: st}, userAgent: defaultUserAgent}
	for _, o := range opts {
		o(c)
	}
	return c
}

// idleTimeout is how long the Client keeps an idle connection: half the daemon's idle
// timeout of the control socket (10 s).
const idleTimeout = 5 * time.Second

// SocketPath returns the path of the socket the Client dials.
func (c *Client) SocketPath() string { return c.socketPath }

// Status asks for the cluster and node status (GET api.PathStatus).
func (c *Client) Status(ctx context.Context) (*api.Status, error) {
	var st api.Status
	if err := c.doJSON(ctx, http.MethodGet, api.PathStatus, nil, nil, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// Create makes this node the master of a new cluster (POST api.PathCreate).
func (c *Client) Create(ctx context.Context) (*api.CreateResponse, error) {
	var cr api.CreateResponse
	if err := c.doJSON(ctx, http.MethodPost, api.PathCreate, nil, nil, &cr); err != nil {
		return nil, err
	}
	return &cr, nil
}

// ConfigGet returns the raw value of key and its version (GET api.PathConfig?key=K,
// with opts.Stale &stale=1), and how the read was served.
func (c *Client) ConfigGet(ctx context.Context, key string, opts ReadOptions) (*ConfigValue, error) {
	resp, err := c.do(ctx, http.MethodGet, api.PathConfig, opts.query(url.Values{"key": {key}}), nil, "")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	value, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("reading value of %q: %w", key, err)
	}
	h := resp.Header.Get(api.HeaderVersion)
	version, err := strconv.ParseUint(h, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("daemon answered with a bad %s header %q", api.HeaderVersion, h)
	}
	ri, err := readInfo(resp.Header)
	if err != nil {
		return nil, err
	}
	return &ConfigValue{Value: value, Version: version, Read: ri}, nil
}

// ConfigSet writes value under key (PUT api.PathConfig?key=K, body: the raw value; with
// opts.IfVersion &if_version=N).
func (c *Client) ConfigSet(ctx context.Context, key string, value []byte, opts WriteOptions) (*api.WriteResponse, error) {
	var wr api.WriteResponse
	q := opts.query(url.Values{"key": {key}})
	if err := c.doJSON(ctx, http.MethodPut, api.PathConfig, q, value, &wr); err != nil {
		return nil, err
	}
	return &wr, nil
}

// ConfigDelete deletes key (DELETE api.PathConfig?key=K; with opts.IfVersion
// &if_version=N).
func (c *Client) ConfigDelete(ctx context.Context, key string, opts WriteOptions) (*api.WriteResponse, error) {
	var wr api.WriteResponse
	q := opts.query(url.Values{"key": {key}})
	if err := c.doJSON(ctx, http.MethodDelete, api.PathConfig, q, nil, &wr); err != nil {
		return nil, err
	}
	return &wr, nil
}

// ConfigList lists the entries whose key starts with prefix; "" lists all
// (GET api.PathConfigList?prefix=P, with opts.Stale &stale=1), and says how the read was
// served.
func (c *Client) ConfigList(ctx context.Context, prefix string, opts ReadOptions) (*api.ConfigList, ReadInfo, error) {
	cl := api.ConfigList{Entries: []api.ConfigEntry{}}
	ri, err := c.ConfigListEach(ctx, prefix, opts, func(e api.ConfigEntry) error {
		cl.Entries = append(cl.Entries, e)
		return nil
	})
	if err != nil {
		return nil, ReadInfo{}, err
	}
	return &cl, ri, nil
}

// ConfigWatch long-polls the changes under prefix with a version above from
// (GET api.PathConfigWatch?prefix=P&from=V&wait=W). The daemon answers as soon as there
// is a change, or with no events once wait has run out (0: the daemon's default). ctx
// must allow more than wait; its deadline is the caller's.
func (c *Client) ConfigWatch(ctx context.Context, prefix string, from uint64, wait time.Duration) (*api.WatchResponse, error) {
	q := url.Values{"from": {strconv.FormatUint(from, 10)}}
	if prefix != "" {
		q.Set("prefix", prefix)
	}
	if wait > 0 {
		q.Set("wait", wait.String())
	}
	var wr api.WatchResponse
	if err := c.doJSON(ctx, http.MethodGet, api.PathConfigWatch, q, nil, &wr); err != nil {
		return nil, err
	}
	return &wr, nil
}

// JoinProbe asks the daemon what the node at master ("ip" or "ip:port") presents, so that
// the operator can check its fingerprint before trusting it (POST api.PathJoinProbe).
func (c *Client) JoinProbe(ctx context.Context, master string) (*api.JoinProbe, error) {
	var p api.JoinProbe
	if err := c.postJSON(ctx, api.PathJoinProbe, nil, api.JoinProbeRequest{Master: master}, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// Join asks the daemon to join the cluster of req.Master, destroying this node's data
// (POST api.PathJoin). It returns once the master has admitted the node; the node then
// catches up in the background.
func (c *Client) Join(ctx context.Context, req api.JoinRequest) (*api.JoinResponse, error) {
	var jr api.JoinResponse
	if err := c.postJSON(ctx, api.PathJoin, nil, req, &jr); err != nil {
		return nil, err
	}
	return &jr, nil
}

// JoinCmd returns the command that joins a new node to this cluster (GET api.PathJoinCmd);
// with rotate it first replaces the join token (POST api.PathJoinCmd?rotate=1).
func (c *Client) JoinCmd(ctx context.Context, rotate bool) (*api.JoinCmd, error) {
	var jc api.JoinCmd
	var err error
	if rotate {
		err = c.doJSON(ctx, http.MethodPost, api.PathJoinCmd, url.Values{"rotate": {"1"}}, nil, &jc)
	} else {
		err = c.doJSON(ctx, http.MethodGet, api.PathJoinCmd, nil, nil, &jc)
	}
	if err != nil {
		return nil, err
	}
	return &jc, nil
}

// RotateJoinToken replaces the join token with one that expires after ttl (never with
// ttl 0) and returns the command with the new token (POST api.PathJoinCmd?rotate=1&ttl=D).
func (c *Client) RotateJoinToken(ctx context.Context, ttl time.Duration) (*api.JoinCmd, error) {
	q := url.Values{"rotate": {"1"}}
	if ttl > 0 {
		q.Set("ttl", ttl.String())
	}
	var jc api.JoinCmd
	if err := c.doJSON(ctx, http.MethodPost, api.PathJoinCmd, q, nil, &jc); err != nil {
		return nil, err
	}
	return &jc, nil
}

// Delete removes the node with cid from the cluster (POST api.PathDelete). With force, a
// node lost with the quorum is removed the way a forced Promote recovers (see
// api.DeleteRequest).
func (c *Client) Delete(ctx context.Context, cid uint64, force bool) (*api.DeleteResponse, error) {
	var dr api.DeleteResponse
	if err := c.postJSON(ctx, api.PathDelete, nil, api.DeleteRequest{CID: cid, Force: force}, &dr); err != nil {
		return nil, err
	}
	return &dr, nil
}

// Promote makes this node the master (POST api.PathPromote) and returns once it is. With
// force, a node of a cluster that lost its quorum becomes its only voter and starts a new
// epoch that fences every other member.
func (c *Client) Promote(ctx context.Context, force bool) (*api.PromoteResponse, error) {
	var pr api.PromoteResponse
	if err := c.postJSON(ctx, api.PathPromote, nil, api.PromoteRequest{Force: force}, &pr); err != nil {
		return nil, err
	}
	return &pr, nil
}

// Sync makes this node catch up with the master now, or, with masterIP, has it re-admitted
// by the master at masterIP after a forced promotion fenced it (POST api.PathSync).
func (c *Client) Sync(ctx context.Context, masterIP string) (*api.SyncResponse, error) {
	var sr api.SyncResponse
	if err := c.postJSON(ctx, api.PathSync, nil, api.SyncRequest{MasterIP: masterIP}, &sr); err != nil {
		return nil, err
	}
	return &sr, nil
}

// doJSON sends a request with a raw body (none when nil) and decodes a 2xx JSON answer
// into out.
func (c *Client) doJSON(ctx context.Context, method, path string, q url.Values, body []byte, out any) error {
	ctype := ""
	if body != nil {
		ctype = "application/octet-stream"
	}
	return c.exchange(ctx, method, path, q, body, ctype, out)
}

// postJSON POSTs in as a JSON body and decodes a 2xx JSON answer into out.
func (c *Client) postJSON(ctx context.Context, path string, q url.Values, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("encoding request of POST %s: %w", path, err)
	}
	return c.exchange(ctx, http.MethodPost, path, q, body, "application/json", out)
}

// exchange sends one request and decodes a 2xx JSON answer into out.
func (c *Client) exchange(ctx context.Context, method, path string, q url.Values, body []byte, ctype string, out any) error {
	resp, err := c.do(ctx, method, path, q, body, ctype)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decoding answer of %s %s: %w", method, path, err)
	}
	return nil
}

// do sends one request with an optional body. A non-2xx answer is closed and returned as
// *APIError; a failure to connect wraps ErrUnreachable.
func (c *Client) do(ctx context.Context, method, path string, q url.Values, body []byte, ctype string) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	return c.doBody(ctx, method, path, q, rd, ctype)
}

// transportError turns an error of http.Client.Do into one that names the cause plainly.
func (c *Client) transportError(method, path string, err error) error {
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "dial" {
		return fmt.Errorf("%w at %s: %w; is the daemon running? (start it with: "+
			"pmgclusterd --data-dir DIR --ip IP, or point --socket / PMGCM_SOCKET at its socket)",
			ErrUnreachable, c.socketPath, opErr.Err)
	}
	var uerr *url.Error
	if errors.As(err, &uerr) {
		err = uerr.Err
	}
	if method != http.MethodGet && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)) {
		return fmt.Errorf("%s %s: the daemon at %s closed the connection before it answered (%w); it may be stopping: "+
			"the change may or may not have been made; check (pmgcm config get, pmgcm status), or retry on another node",
			method, path, c.socketPath, err)
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		return fmt.Errorf("%s %s: the daemon at %s closed the connection before it answered (%w); "+
			"it may be stopping, or holding as many control connections as it takes (see its log): try again",
			method, path, c.socketPath, err)
	}
	return fmt.Errorf("%s %s: %w", method, path, err)
}

// decodeAPIError reads a non-2xx answer into an *APIError. An answer that is not an
// api.Error (a proxy, a wrong socket) still gives a readable message.
func decodeAPIError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	e := &APIError{Status: resp.StatusCode}
	if err := json.Unmarshal(b, &e.wireError); err != nil || e.Message == "" {
		e.wireError = api.Error{Code: e.Code, Message: "daemon answered " + resp.Status}
		if s := string(bytes.TrimSpace(b)); s != "" && len(s) < 512 {
			e.Message += ": " + s
		}
	}
	return e
}

// NewAPIError returns the error a Client returns for a non-2xx answer with status and the
// decoded body e: for fakes of the client in tests of the packages that use it.
func NewAPIError(status int, e api.Error) *APIError {
	return &APIError{Status: status, wireError: e}
}
