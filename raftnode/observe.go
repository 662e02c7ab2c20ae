package raftnode

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// observed is what the node learns from Raft's observations, for metrics: how often the
// leader changed and, on the leader, which peers fail their heartbeats since when.
type observed struct {
	leaderChanges atomic.Uint64
	mu            sync.Mutex
	failing       map[raft.ServerID]time.Time // guarded by mu
	// changed is closed (and dropped) at the next leader observation; guarded by mu.
	changed chan struct{}
	// closed is set once the node closed: LeaderChanged then never fires.
	closed bool
}

// observe registers an observer on the instance's Raft and consumes its observations
// until the instance stops.
func (n *Node) observe(in *instance) {
	r := in.raft
	ch := make(chan raft.Observation, 64)
	obs := raft.NewObserver(ch, false, func(o *raft.Observation) bool {
		switch o.Data.(type) {
		case raft.LeaderObservation, raft.FailedHeartbeatObservation, raft.ResumedHeartbeatObservation:
			return true
		}
		return false
	})
	r.RegisterObserver(obs)
	in.wg.Add(1)
	go func() {
		defer in.wg.Done()
		defer r.DeregisterObserver(obs)
		for {
			select {
			case <-in.stop:
				return
			case o := <-ch:
				n.note(o)
			}
		}
	}()
}

func (n *Node) note(o raft.Observation) {
	n.obs.mu.Lock()
	defer n.obs.mu.Unlock()
	switch d := o.Data.(type) {
	case raft.LeaderObservation:
		if d.LeaderID != "" {
			n.obs.leaderChanges.Add(1)
		}
		n.obs.failing = nil // a new term: heartbeats start over
		n.obs.fireChanged()
	case raft.FailedHeartbeatObservation:
		if n.obs.failing == nil {
			n.obs.failing = map[raft.ServerID]time.Time{}
		}
		n.obs.failing[d.PeerID] = d.LastContact
	case raft.ResumedHeartbeatObservation:
		delete(n.obs.failing, d.PeerID)
	}
}

// fireChanged wakes the LeaderChanged waiters; the caller holds obs.mu.
func (o *observed) fireChanged() {
	if o.changed != nil {
		close(o.changed)
		o.changed = nil
	}
}

// LeaderChanged returns a channel that is closed when this node next observes a change
// of leader (a new one, or none during an election), when Raft stops (Stop, Restart,
// ForceRecover) or when the node closes. After the node has closed it returns nil, which
// never fires.
func (n *Node) LeaderChanged() <-chan struct{} {
	n.obs.mu.Lock()
	defer n.obs.mu.Unlock()
	if n.obs.closed {
		return nil
	}
	if n.obs.changed == nil {
		n.obs.changed = make(chan struct{})
	}
	return n.obs.changed
}

// LeaderChanges returns how many times this node saw a (new) leader since it opened.
func (n *Node) LeaderChanges() uint64 { return n.obs.leaderChanges.Load() }

// FailingPeers returns, on the leader, the peers whose heartbeats fail, with the time
// each was last heard from. Raft exposes no per-peer contact time for healthy peers: a
// peer absent from the map answered its last heartbeat.
func (n *Node) FailingPeers() map[raft.ServerID]time.Time {
	n.obs.mu.Lock()
	defer n.obs.mu.Unlock()
	out := make(map[raft.ServerID]time.Time, len(n.obs.failing))
	for id, t := range n.obs.failing {
		out[id] = t
	}
	return out
}
