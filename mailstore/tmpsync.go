package mailstore

import "sync"

// Shared fsyncs of tmp/, off the batch's path.
//
// An Accept's spooled name must be durable before its batch commits (spool.go): until
// the background flush, it is the body's durable name. The name exists from the
// moment the Accept creates its file, so any fsync of tmp/ that starts after that
// makes it durable. An Accept takes a mark right after it creates the file
// (dirSyncer.mark) and, once the message is received, asks for a round of fsync that
// started after the mark (dirSyncer.after): one that another Accept started meanwhile
// if there is one, else a new one. The fsync runs while the body is fsynced; the
// batch waits for it with the body's fsync (commitReq.ready) instead of syncing tmp/
// itself between its transaction's work and its commit. That leaves two syncs in
// series per batch on the way to a 250 (bbolt's), where there were three (tmp/, then
// bbolt's two).
//
// Rounds are numbered in the order they start. While one fsync of tmp/ runs, every
// request that it does not serve joins the next round, which starts when the running
// one ends: there is at most one fsync of tmp/ in flight and one waiting, whatever the
// number of connections.

// syncRound is one fsync of a directory; done is closed when it ended, with err set.
type syncRound struct {
	n    uint64 // its number; set when it starts
	done chan struct{}
	err  error
}

// wait waits for the round and returns its error.
func (r *syncRound) wait() error {
	<-r.done
	return r.err
}

// dirSyncer runs the shared fsyncs of one directory.
type dirSyncer struct {
	dir string

	mu      sync.Mutex
	started uint64     // rounds started so far
	cur     *syncRound // the round whose fsync is in flight; nil when idle
	next    *syncRound // the round that starts after cur; nil when none asked
	// sync is the fsync a round runs (syncDir; tests replace it).
	sync func(dir string) error
}

// mark returns a mark for after: every round that starts after the call has a
// number above it.
func (d *dirSyncer) mark() uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.started
}

// after returns a round of dir's fsync that started after mark was taken: once it is
// done without error, every name created in dir before the mark is durable.
func (d *dirSyncer) after(mark uint64) *syncRound {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cur != nil && d.cur.n > mark {
		return d.cur
	}
	if d.next == nil {
		d.next = &syncRound{done: make(chan struct{})}
	}
	r := d.next
	if d.cur == nil {
		d.startLocked()
		go d.run()
	}
	return r
}

// request returns a round that starts after the call (after of a mark taken now).
func (d *dirSyncer) request() *syncRound {
	return d.after(d.mark())
}

// startLocked makes next the running round; d.mu is held.
func (d *dirSyncer) startLocked() {
	d.started++
	d.cur, d.next = d.next, nil
	d.cur.n = d.started
}

// run runs the current round, then every round requested meanwhile, one after the
// other.
func (d *dirSyncer) run() {
	d.mu.Lock()
	for d.cur != nil {
		r := d.cur
		d.mu.Unlock()
		fn := d.sync
		if fn == nil {
			fn = syncDir
		}
		r.err = fn(d.dir)
		close(r.done)
		d.mu.Lock()
		d.cur = nil
		if d.next != nil {
			d.startLocked()
		}
	}
	d.mu.Unlock()
}
