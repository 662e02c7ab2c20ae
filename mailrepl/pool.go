package mailrepl

import (
	"context"
)

// Bodies are fetched by a fixed set of workers (Config.Fetchers), so that a node that
// lacks many bodies (a node joining a cluster that holds 30,000 messages, issue 16)
// has several transfers in flight instead of one round trip, one write and one commit
// after another: the round trips overlap, and concurrent commits can share the store's
// syncs. The peer loops and the sweeper hand the IDs to the workers through a bounded
// queue (Config.FetchQueue) and wait when it is full, so that a node far behind neither
// holds an unbounded list nor runs ahead of its bodies by more than the queue; memory is
// bounded by Fetchers transfers (each streams to the store through one copy buffer)
// plus the queued IDs. The wire is unchanged: each worker asks PathBody, which every
// release serves.

// Defaults of Config.Fetchers and Config.FetchQueue. With 32 fetchers (16 before) a
// joining node's body commits come about 9 to a batch instead of 4-5: a third fewer
// index commits and tmp/ syncs, and 10-20% less CPU per body on the joining node
// (docs/performance.md); 64 gave no more.
const (
	DefaultFetchers   = 32
	DefaultFetchQueue = 4096
)

// fetchJob asks a worker for the body of id, first from first (zero Peer: none).
type fetchJob struct {
	id    string
	first Peer
	// done, when set, receives the outcome; it must not block.
	done func(error)
}

// submit queues j for a worker; it waits while the queue is full, and returns false
// (j dropped, done not called) once ctx or the replicator ends.
func (r *Replicator) submit(ctx context.Context, j fetchJob) bool {
	select {
	case r.jobs <- j:
		return true
	case <-ctx.Done():
		return false
	case <-r.ctx.Done():
		return false
	}
}

// fetchWorker fetches the queued bodies until the replicator closes. A job it cannot
// finish without a done callback (from a peer loop) asks the sweeper to retry soon.
func (r *Replicator) fetchWorker() {
	defer r.wg.Done()
	for {
		select {
		case <-r.ctx.Done():
			return
		case j := <-r.jobs:
			err := r.fetchBody(r.ctx, j.id, j.first)
			if j.done != nil {
				j.done(err)
				continue
			}
			if err != nil && r.ctx.Err() == nil {
				r.log.Debug("body not fetched yet", "id", j.id, "error", err)
				signal(r.sweepSoon)
			}
		}
	}
}
