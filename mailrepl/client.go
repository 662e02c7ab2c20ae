package mailrepl

import (
	"context"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/pmgcm/pmgcm/internal/synchttp"
)

// ClientIdleTimeout is how long NewHTTPClient's client keeps an idle body connection. A
// server of the mail channel must keep an idle connection open for longer, so that the
// client, not the server, closes it: a server that closes one first makes the next
// fetch on it fail its write and go again on a new connection (a new handshake).
const ClientIdleTimeout = 90 * time.Second

// NewHTTPClient returns the http.Client a Replicator sends with (Config.Client): a body
// fetch (GET PathBody... or PathBodies) is written and its answer read on the fetcher's own goroutine
// over a kept-alive connection made by dial (synchttp), without net/http Transport's
// hand-offs to a reader and a writer goroutine per connection (issue 16: those were about
// 13% of a joining node's CPU); every other request (the events long polls) goes to
// fallback unchanged. The bytes on the wire are net/http's but for the
// "Accept-Encoding: gzip" it adds (bodies were never compressed).
//
// fetchers is the Config.Fetchers of the Replicator (0: DefaultFetchers): that many
// connections are kept idle per peer, since every fetcher may fetch from one peer (a
// join), and a connection given back with no room would be closed and the next fetch
// would dial again. The answer's head is not bounded here (fallback's
// ResponseHeaderTimeout does not apply): a Replicator's transfer bounds the whole fetch
// by Config.StallTimeout. CloseIdleConnections closes the connections of both.
func NewHTTPClient(dial func(ctx context.Context, addr string) (net.Conn, error), fallback http.RoundTripper, fetchers int) *http.Client {
	if fetchers <= 0 {
		fetchers = DefaultFetchers
	}
	return &http.Client{Transport: &synchttp.Transport{
		Dial:           dial,
		Fallback:       fallback,
		MaxIdlePerHost: fetchers,
		IdleTimeout:    ClientIdleTimeout,
		Only:           isBodyFetch,
	}}
}

// isBodyFetch says whether req asks for a body or several (sent on the calling goroutine).
func isBodyFetch(req *http.Request) bool {
	return req.Method == http.MethodGet && (strings.HasPrefix(req.URL.Path, PathBody) || req.URL.Path == PathBodies)
}
