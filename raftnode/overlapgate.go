package raftnode

import (
	"fmt"

	"github.com/hashicorp/raft"

	"github.com/pmgcm/pmgcm/fsm"
)

// durableFSM is the state machine behind the gate of overlap.go: an entry is applied
// only once this node's log has it on disk. On a follower that is always so already (a
// follower stores an entry before it acknowledges it); on the master the wait is for its
// own fsync, which runs beside the replication.
type durableFSM struct {
	*fsm.FSM
	logs *overlapStore
}

var (
	_ raft.FSM                = durableFSM{}
	_ raft.ConfigurationStore = durableFSM{}
)

// Apply applies l once it is on disk. waitDurable fails only on a store closed with the
// entry not on disk, which follows a failed append of the master's log; that stops the
// process (overlapStore.onFail), and so does this: skipping the entry would let raft
// count it applied, and a snapshot claim a state without it.
func (d durableFSM) Apply(l *raft.Log) interface{} {
	d.mustBeDurable(l.Index)
	return d.FSM.Apply(l)
}

// StoreConfiguration implements raft.ConfigurationStore so that raft answers a
// membership change only once its entry is on disk here too: the daemon makes one
// change at a time, each after the last one's answer, and two changes in flight on a
// log that may still lose the first would break Raft's one-change-at-a-time rule.
func (d durableFSM) StoreConfiguration(index uint64, _ raft.Configuration) {
	d.mustBeDurable(index)
}

func (d durableFSM) mustBeDurable(index uint64) {
	if !d.logs.waitDurable(index) {
		panic(fmt.Sprintf("raftnode: log entry %d reached the state machine but is not on this node's disk, "+
			"whose log store failed or closed: stopping, so that a restart recovers from what is on disk", index))
	}
}

// capTransport caps the commit index each AppendEntries request carries at the highest
// index on this node's disk (overlap.go): a follower applies an entry only once the
// master has it on disk.
type capTransport struct {
	*gatedTransport
	durable func() uint64
}

// capped returns a copy of args whose commit index is at most durable().
func (c capTransport) capped(args *raft.AppendEntriesRequest) *raft.AppendEntriesRequest {
	if d := c.durable(); args.LeaderCommitIndex > d {
		cp := *args
		cp.LeaderCommitIndex = d
		return &cp
	}
	return args
}

// AppendEntries sends args with its commit index capped.
func (c capTransport) AppendEntries(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest,
	resp *raft.AppendEntriesResponse) error {
	return c.gatedTransport.AppendEntries(id, target, c.capped(args), resp)
}

// AppendEntriesPipeline returns a pipeline that caps the commit index of what it sends.
func (c capTransport) AppendEntriesPipeline(id raft.ServerID, target raft.ServerAddress) (raft.AppendPipeline, error) {
	p, err := c.gatedTransport.AppendEntriesPipeline(id, target)
	if err != nil {
		return nil, err
	}
	return capPipeline{AppendPipeline: p, c: c}, nil
}

// capPipeline is a raft.AppendPipeline whose requests carry a capped commit index.
type capPipeline struct {
	raft.AppendPipeline
	c capTransport
}

// AppendEntries sends args with its commit index capped.
func (p capPipeline) AppendEntries(args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) (raft.AppendFuture, error) {
	return p.AppendPipeline.AppendEntries(p.c.capped(args), resp)
}
