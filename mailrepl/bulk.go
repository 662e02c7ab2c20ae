package mailrepl

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"

	"github.com/pmgcm/pmgcm/mailstore"
)

// bulkMaxBody is the largest body fetched with others (PathBodies); a larger one is
// fetched alone, where a transfer broken mid-body resumes at its offset.
const bulkMaxBody = 1 << 20

// fetchBulk fetches the bodies of ids from p in one request of PathBodies, and those p
// lacks from their origin in one more (fromOrigins). It returns the IDs it did not
// settle, for the one-by-one path (fetchBody): those no node asked holds, those a
// transfer begun before left partly received, those too large, and every one after a
// failure. A body held, unknown, deleted or being fetched by another worker is settled.
// Each received body commits on its own goroutine while the next one streams in, so
// the commits of one answer share the store's batches.
func (r *Replicator) fetchBulk(ctx context.Context, p Peer, ids []string) (left []string) {
	pctx, done, ok := r.peerContext(ctx, p)
	if !ok {
		return ids
	}
	defer done()

	var ws []*mailstore.BodyWriter
	for _, id := range ids {
		w, off, err := r.store.BeginBody(id)
		switch {
		case bodySettled(err):
		case err != nil:
			left = append(left, id)
		case off > 0 || w.Meta().Size > bulkMaxBody:
			_ = w.Close() // keeps the partial file: fetchBody resumes it
			left = append(left, id)
		default:
			ws = append(ws, w)
		}
	}
	if len(ws) == 0 {
		return left
	}
	var (
		wg sync.WaitGroup
		mu sync.Mutex
	)
	settled := 0
	var lack []string // the bodies p does not hold
	err := r.streamBodies(pctx, p, ws, func(w *mailstore.BodyWriter) {
		settled++
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := w.Commit(); err != nil && !bodySettled(err) {
				if ctx.Err() == nil {
					r.log.Warn("body from a bulk transfer not committed", "id", w.Meta().ID, "cid", p.CID, "error", err)
				}
				mu.Lock()
				left = append(left, w.Meta().ID)
				mu.Unlock()
			}
		}()
	}, func(w *mailstore.BodyWriter) {
		settled++
		_ = w.Close()
		lack = append(lack, w.Meta().ID) // on this goroutine, as settled
	})
	for _, w := range ws[settled:] {
		_ = w.Close()
	}
	wg.Wait()
	if err != nil && ctx.Err() == nil && !errors.Is(err, errNotHere) {
		// The rest are fetched one by one at once; a stall (StallTimeout lost) is worth
		// a warning, as in a single transfer.
		log := r.log.Debug
		if errors.Is(err, errStalled) {
			log = r.log.Warn
		}
		log("bulk body transfer failed, fetching the rest one by one", "cid", p.CID, "address", p.Addr, "bodies", len(ws)-settled, "error", err)
	}
	for _, w := range ws[settled:] {
		left = append(left, w.Meta().ID)
	}
	return append(left, r.fromOrigins(ctx, p, lack)...)
}

// fromOrigins fetches bodies that p, which sent their events, does not hold, in bulk from
// their origins' nodes: p relayed another origin's events before it had their bodies
// (replication is transitive). It returns the IDs still to fetch one by one: those whose
// origin is p or has no running loop, and those the origin did not settle.
func (r *Replicator) fromOrigins(ctx context.Context, p Peer, ids []string) (left []string) {
	groups, left := groupByOrigin(ids)
	for _, g := range groups {
		o, ok := r.originPeer(g.origin)
		if g.origin == p.CID || !ok || ctx.Err() != nil {
			left = append(left, g.ids...)
			continue
		}
		left = append(left, r.fetchBulk(ctx, o, g.ids)...) // o is their origin: no further hop
	}
	return left
}

// originGroup is the IDs of one origin's messages.
type originGroup struct {
	origin uint64
	ids    []string
}

// groupByOrigin splits ids by the origin their ID names, the origins in the order first
// met; unparsed are the IDs that name none.
func groupByOrigin(ids []string) (groups []originGroup, unparsed []string) {
	at := map[uint64]int{}
	for _, id := range ids {
		origin, _, err := mailstore.ParseID(id)
		if err != nil {
			unparsed = append(unparsed, id)
			continue
		}
		i, seen := at[origin]
		if !seen {
			i = len(groups)
			at[origin] = i
			groups = append(groups, originGroup{origin: origin})
		}
		groups[i].ids = append(groups[i].ids, id)
	}
	return groups, unparsed
}

// streamBodies asks p for the bodies of ws and writes each into its writer in turn:
// received is called with each whole one, lacking with each p does not hold. It stops
// at the first error, leaving the writers not handed to either callback to the caller;
// a whole answer of 404 (a node that does not serve PathBodies) is errNotHere. Like a
// single transfer it is cut after StallTimeout without progress.
func (r *Replicator) streamBodies(ctx context.Context, p Peer, ws []*mailstore.BodyWriter, received, lacking func(*mailstore.BodyWriter)) (err error) {
	sw := r.watchStall(ctx)
	defer sw.stop(&err)
	ctx = sw.ctx
	ids := make([]string, len(ws))
	for i, w := range ws {
		ids[i] = w.Meta().ID
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, bodiesURL(p.Addr, ids), nil)
	if err != nil {
		return err
	}
	resp, err := r.cfg.Client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return errNotHere
	case resp.StatusCode != http.StatusOK:
		return fmt.Errorf("%w: bodies: %s", ErrPeer, resp.Status)
	}
	br := bufio.NewReaderSize(&progressReader{r: resp.Body, progress: sw.progress}, 4096)
	buf := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(buf)
	for _, w := range ws {
		meta := w.Meta()
		h, err := readFrameHead(br)
		switch {
		case err != nil:
			return err
		case h.id != meta.ID:
			return fmt.Errorf("%w: bodies: %s where %s was due", ErrPeer, h.id, meta.ID)
		case !h.held:
			lacking(w)
			continue
		case h.size != meta.Size || h.sha256 != meta.SHA256:
			return fmt.Errorf("%w: body %s: size or sha256 differs from the event's", ErrPeer, meta.ID)
		}
		n, err := copyFull(w, io.LimitReader(br, h.size), *buf)
		if err == nil && n != h.size {
			err = fmt.Errorf("%w: body %s: short by %d bytes", ErrPeer, meta.ID, h.size-n)
		}
		if err != nil {
			return err
		}
		received(w)
	}
	// Read to the answer's end, so that the connection is kept for the next fetch (a
	// body not read to its end makes the client close it: a new TLS handshake).
	if _, err := br.ReadByte(); err != io.EOF {
		return fmt.Errorf("%w: bodies: more than was asked for", ErrPeer)
	}
	return nil
}
