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
// plus the queued jobs (each of at most bulkChunk IDs). A worker asks PathBody for
// each body, which every release serves, or, once every member serves it (Config.Bulk),
// PathBodies for the bodies of one events answer at once, or of one origin's missing
// bodies in a sweep (bulk.go). Descriptors: a
// worker holds the partial file of the body streaming in, and those of the bodies
// before it until their commits have closed them; the writers of the bodies still to
// come hold none (mailstore.BodyWriter opens its file at the first Write).

// Defaults of Config.Fetchers and Config.FetchQueue. With 32 fetchers (16 before) a
// joining node's body commits come about 9 to a batch instead of 4-5: a third fewer
// index commits and tmp/ syncs, and 10-20% less CPU per body on the joining node
// (docs/performance.md); 64 gave no more.
const (
	DefaultFetchers   = 32
	DefaultFetchQueue = 4096
)

// fetchJob asks a worker for the bodies of ids, first from first (zero Peer: none).
// Several IDs (from one events answer) are asked of first in one request when
// Config.Bulk allows (bulk.go); the rest, and any single ID, one by one.
type fetchJob struct {
	ids   []string
	first Peer
	// done, when set, receives the outcome of each ID (nil for one fetched or found
	// settled); it must not block.
	done func(error)
}

// bulkChunk is how many IDs of one events answer a worker asks for in one request:
// enough that the per-request work is shared, few enough that a join's large answers
// still spread over every worker (2,000 events make 63 jobs for 32 workers).
const bulkChunk = 32

// jobsOf splits the IDs of bodies needed after one events answer into the IDs of one
// job each: chunks of up to bulkChunk with Config.Bulk, else one ID a job.
func (r *Replicator) jobsOf(ids []string) [][]string {
	size := 1
	if r.bulk() {
		size = bulkChunk
	}
	out := make([][]string, 0, (len(ids)+size-1)/size)
	for len(ids) > 0 {
		n := min(size, len(ids))
		out = append(out, ids[:n:n])
		ids = ids[n:]
	}
	return out
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
			ids := j.ids
			if len(ids) > 1 { // only with Config.Bulk: jobsOf, sweepJobs
				left := r.fetchBulk(r.ctx, j.first, ids)
				if j.done != nil {
					for range len(ids) - len(left) {
						j.done(nil)
					}
				}
				ids = left
			}
			for _, id := range ids {
				if r.ctx.Err() != nil {
					return // closing: the rest is found missing at the next start
				}
				err := r.fetchBody(r.ctx, id, j.first)
				if j.done != nil {
					j.done(err)
					continue
				}
				if err != nil && r.ctx.Err() == nil {
					r.log.Debug("body not fetched yet", "id", id, "error", err)
					signal(r.sweepSoon)
				}
			}
		}
	}
}

// bulk says whether several bodies may be asked for in one request (Config.Bulk).
func (r *Replicator) bulk() bool { return r.cfg.Bulk != nil && r.cfg.Bulk() }
