package mailstore

import "sync"

// Shared fsyncs of tmp/, off the batch's path.
//
// An Accept's spooled name must be durable before its batch commits (spool.go): until
// the background flush, it is the body's durable name. The name exists from the
// moment the Accept creates its file, so any fsync of tmp/ that starts after that
// makes it durable. An Accept therefore asks for one right after it creates the file
// (dirSyncer.request), and the fsync runs while the message is still being received
// and its body fsynced; the batch waits for it with the body's fsync (commitReq.ready)
// instead of syncing tmp/ itself between its transaction's work and its commit. That
// leaves two syncs in series per batch on the way to a 250 (bbolt's), where there were
// three (tmp/, then bbolt's two).
//
// Requests share rounds: while one fsync of tmp/ runs, every request made meanwhile
// joins the next round, which starts when the running one ends. So there is at most
// one fsync of tmp/ in flight and one waiting, whatever the number of connections.

// syncRound is one fsync of a directory; done is closed when it ended, with err set.
type syncRound struct {
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
	running bool       // a round's fsync is in flight
	next    *syncRound // the round that starts after the running one; nil when none asked
	// sync is the fsync a round runs (syncDir; tests replace it).
	sync func(dir string) error
}

// request returns a round of dir's fsync that starts after the call: once it is done
// without error, every name created in dir before the call is durable.
func (d *dirSyncer) request() *syncRound {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.next == nil {
		d.next = &syncRound{done: make(chan struct{})}
	}
	r := d.next
	if !d.running {
		d.running = true
		d.next = nil
		go d.run(r)
	}
	return r
}

// run runs round r, then every round requested meanwhile, one after the other.
func (d *dirSyncer) run(r *syncRound) {
	for r != nil {
		fn := d.sync
		if fn == nil {
			fn = syncDir
		}
		r.err = fn(d.dir)
		close(r.done)
		d.mu.Lock()
		r, d.next = d.next, nil
		if r == nil {
			d.running = false
		}
		d.mu.Unlock()
	}
}
