package mailrepl

import (
	"sync"
	"time"
)

// BacklogState is what Backlog and BacklogKnown report, read together: Known first,
// then the backlog, so that a state read before the first poll of every peer never
// shows an empty backlog as known.
type BacklogState struct {
	Messages, Bytes int64
	Known           bool
}

// Bounds of the time a BacklogState is served again instead of read anew.
const (
	backlogMinReuse = 10 * time.Millisecond
	backlogMaxReuse = time.Second
	// backlogCostShare: a state is reused for this many times as long as it took to
	// read, so that reading it takes at most about a thirtieth of a core however often
	// status is asked (issue 16: a node joining a cluster of 30,000 messages spent a
	// third of its CPU listing its missing bodies for the status calls of the bench;
	// at a tenth of a core, 8% of its CPU still). The store reads only the missing
	// bodies' sizes (MissingTotals), so the reuse stays short: 5-10 times shorter than
	// with a tenth of a core and the whole list decoded.
	backlogCostShare = 30
)

// backlogCache holds the last BacklogState read and until when it is served.
type backlogCache struct {
	mu    sync.Mutex
	v     BacklogState
	until time.Time
}

// BacklogState returns Known and the backlog (see Backlog and BacklogKnown) as read at
// most a moment ago: a state is reused for backlogCostShare times as long as reading it
// took (the store reads every missing body's size), between 10 ms and 1 s. It is what a node's status
// shows; while a node receives mail the backlog only shrinks, so a reused state shows
// it behind, never ahead.
func (r *Replicator) BacklogState() BacklogState {
	c := &r.backlog
	c.mu.Lock()
	if time.Now().Before(c.until) {
		v := c.v
		c.mu.Unlock()
		return v
	}
	c.mu.Unlock()
	start := time.Now()
	var v BacklogState
	v.Known = r.BacklogKnown()
	v.Messages, v.Bytes = r.Backlog()
	took := time.Since(start)
	c.mu.Lock()
	c.v = v
	c.until = start.Add(min(max(backlogCostShare*took, backlogMinReuse), backlogMaxReuse))
	c.mu.Unlock()
	return v
}
