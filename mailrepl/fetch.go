package mailrepl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/pmgcm/pmgcm/mailstore"
)

// errNotHere means a peer answered 404: it does not hold the body.
var errNotHere = errors.New("mailrepl: peer lacks the body")

// errStalled means a peer made no progress on a body fetch for Config.StallTimeout: no
// answer's head, or no byte of the body, came in that long.
var errStalled = errors.New("mailrepl: body transfer stalled")

// maxResumes bounds how often a transfer broken mid-body is resumed from the
// same peer before the next peer is tried.
const maxResumes = 3

// fetchBody fetches the body of id from first (the peer that sent its event;
// zero Peer for none), else the origin's node, else any other peer. It
// returns nil when the body is here (or no longer wanted) afterwards.
func (r *Replicator) fetchBody(ctx context.Context, id string, first Peer) error {
	// The origin is the ID's first part (mailstore.MakeID): no index read for it. A
	// message unknown, deleted or purged here ends the fetch at the first BeginBody.
	origin, _, err := mailstore.ParseID(id)
	if err != nil {
		return err
	}
	var errs []error
	for _, p := range r.peers(first, origin) {
		pctx, done, ok := r.peerContext(ctx, p)
		if !ok {
			continue
		}
		err := r.fetchFrom(pctx, p, id)
		done()
		switch {
		case err == nil, bodySettled(err):
			return nil
		case ctx.Err() != nil:
			return ctx.Err()
		}
		// A transfer cut as its peer left is not worth a warning; one cut by the stall
		// watchdog (a cancel too) is.
		if !errors.Is(err, errNotHere) && (errors.Is(err, errStalled) || !errors.Is(err, context.Canceled)) {
			r.log.Warn("body transfer failed", "id", id, "cid", p.CID, "address", p.Addr, "error", err)
		}
		errs = append(errs, fmt.Errorf("peer %d: %w", p.CID, err))
	}
	if len(errs) == 0 {
		return fmt.Errorf("%w: %s: no peer to ask", ErrNoSource, id)
	}
	return fmt.Errorf("%w: %s: %w", ErrNoSource, id, errors.Join(errs...))
}

// peerContext returns a context for a transfer from p under ctx: it ends with ctx, or
// when p leaves the members (removed, fenced) and its loop stops. done releases it;
// false when p has no loop.
func (r *Replicator) peerContext(ctx context.Context, p Peer) (_ context.Context, done func(), ok bool) {
	pctx, ok := r.loopContext(p)
	if !ok {
		return nil, nil, false
	}
	pctx, cancel := context.WithCancel(pctx)
	stop := context.AfterFunc(ctx, cancel)
	return pctx, func() { stop(); cancel() }, true
}

// bodySettled says a body needs no more fetching after err from the store: it is here
// (ErrExists), no longer wanted (ErrNotFound: unknown, deleted or purged), or another
// worker is fetching it (ErrBusy).
func bodySettled(err error) bool {
	return errors.Is(err, mailstore.ErrExists) || errors.Is(err, mailstore.ErrNotFound) || errors.Is(err, mailstore.ErrBusy)
}

// fetchFrom fetches the body of id from p, resuming a broken transfer.
func (r *Replicator) fetchFrom(ctx context.Context, p Peer, id string) error {
	var err error
	for attempt := 0; attempt < maxResumes; attempt++ {
		var w *mailstore.BodyWriter
		var off int64
		w, off, err = r.store.BeginBody(id)
		if err != nil {
			return err
		}
		var n int64
		n, err = r.transfer(ctx, p, w, off)
		if err == nil {
			return w.Commit()
		}
		_ = w.Close() // keeps the partial file for the next attempt
		if n == 0 || ctx.Err() != nil {
			return err
		}
		r.log.Info("body transfer broken, resuming", "id", id, "cid", p.CID, "address", p.Addr, "offset", off+n, "error", err)
	}
	return err
}

// transfer streams the body from p into w starting at off; n is how many
// bytes arrived.
func (r *Replicator) transfer(ctx context.Context, p Peer, w *mailstore.BodyWriter, off int64) (n int64, err error) {
	meta := w.Meta()
	sw := r.watchStall(ctx)
	defer sw.stop(&err)
	ctx = sw.ctx
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, bodyURL(p.Addr, meta.ID, off), nil)
	if err != nil {
		return 0, err
	}
	resp, err := r.cfg.Client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return 0, errNotHere
	case resp.StatusCode != http.StatusOK:
		return 0, fmt.Errorf("%w: body %s: %s", ErrPeer, meta.ID, resp.Status)
	case resp.Header.Get(HeaderSHA256) != meta.SHA256 || resp.Header.Get(HeaderSize) != strconv.FormatInt(meta.Size, 10):
		return 0, fmt.Errorf("%w: body %s: size or sha256 differs from the event's", ErrPeer, meta.ID)
	}
	buf := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(buf)
	n, err = copyFull(w, &progressReader{r: resp.Body, progress: sw.progress}, *buf)
	if err == nil && off+n != meta.Size {
		err = fmt.Errorf("%w: body %s: short by %d bytes", ErrPeer, meta.ID, meta.Size-off-n)
	}
	return n, err
}

// stallWatch cuts a transfer that makes no progress for Config.StallTimeout: a peer that
// stops (stopped process, dead link) must not hold it forever. The watch starts before the
// request is sent, so that it bounds the dial, the request and the wait for the answer's
// head too (the client has no response-header timeout: NewHTTPClient), then each read of
// the body starts it again (progress).
type stallWatch struct {
	ctx     context.Context // the transfer's: cut with cause errStalled
	cancel  context.CancelCauseFunc
	timer   *time.Timer
	timeout time.Duration
}

// watchStall starts a stallWatch over a transfer under ctx; stop it when the transfer ends.
func (r *Replicator) watchStall(ctx context.Context) *stallWatch {
	ctx, cancel := context.WithCancelCause(ctx)
	sw := &stallWatch{ctx: ctx, cancel: cancel, timeout: r.cfg.StallTimeout}
	sw.timer = time.AfterFunc(sw.timeout, func() { cancel(errStalled) })
	return sw
}

// progress restarts the watch: bytes came in.
func (sw *stallWatch) progress() { sw.timer.Reset(sw.timeout) }

// stop ends the watch and its context; an error *err of a transfer the watch cut says so.
func (sw *stallWatch) stop(err *error) {
	sw.timer.Stop()
	if *err != nil && errors.Is(context.Cause(sw.ctx), errStalled) {
		*err = fmt.Errorf("%w after %s: %w", errStalled, sw.timeout, *err)
	}
	sw.cancel(nil)
}

// copyBuffers are the transfers' copy buffers: one per body in flight, reused, so that a
// node fetching 30,000 bodies does not allocate (and collect) 30,000 of them.
var copyBuffers = sync.Pool{New: func() any {
	b := make([]byte, 32<<10)
	return &b
}}

// copyFull copies src to dst through buf as io.CopyBuffer does, but fills buf before
// each write: a TLS connection hands over one record (up to 16 KiB) per read, and a
// body of 20 KiB then costs the store one write instead of two. What was read before
// an error is written before the error is returned (a broken transfer resumes there).
func copyFull(dst io.Writer, src io.Reader, buf []byte) (n int64, err error) {
	for {
		k := 0
		var rerr error
		for k < len(buf) && rerr == nil {
			var m int
			m, rerr = src.Read(buf[k:])
			k += m
		}
		if k > 0 {
			wk, werr := dst.Write(buf[:k])
			n += int64(wk)
			if werr != nil {
				return n, werr
			}
		}
		switch {
		case rerr == io.EOF:
			return n, nil
		case rerr != nil:
			return n, rerr
		}
	}
}

// progressReader calls progress after every read that returned data.
type progressReader struct {
	r        io.Reader
	progress func()
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		p.progress()
	}
	return n, err
}
