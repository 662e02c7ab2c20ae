package daemon

import (
	"context"
	"net"
	"net/http"

	"github.com/pmgcm/pmgcm/cluster"
	"github.com/pmgcm/pmgcm/internal/synchttp"
	"github.com/pmgcm/pmgcm/transport"
)

// peerHTTPClient returns the http.Client of the cluster RPC channel that d.peer sends
// with: the mux's, except that a ReadIndex request (GET, no body, one per read-index round
// on every member that is not the master) is written and its answer read on the calling
// goroutine over a kept-alive connection (synchttp), without net/http Transport's
// hand-offs to its connection goroutines (issue 16: lin_get is CPU-bound). The bytes on
// the wire are the same but for the "Accept-Encoding: gzip" net/http adds (the answer, a
// few bytes of JSON, was never compressed). CloseIdleConnections drops the connections of both.
func (d *Daemon) peerHTTPClient() *http.Client {
	hc := d.mux.HTTPClient(transport.ChanRPC)
	hc.Transport = &synchttp.Transport{
		Dial: func(ctx context.Context, addr string) (net.Conn, error) {
			return d.mux.Dial(ctx, addr, transport.ChanRPC)
		},
		Fallback: hc.Transport,
		Only: func(req *http.Request) bool {
			return req.Method == http.MethodGet && req.URL.Path == cluster.PathReadIndex
		},
	}
	return hc
}
