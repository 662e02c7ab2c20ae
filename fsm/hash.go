package fsm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
)

// ErrIndexPassed is returned by HashAt when the state machine has already applied an
// entry after the requested index: its state at that index is gone. Ask again with a
// later index.
var ErrIndexPassed = errors.New("index already passed")

// StateHash is the digest of the replicated state at one applied index, as etcd's
// hashkv: two nodes whose StateHash at the same Index differ hold different states.
type StateHash struct {
	// Index is the index the state was hashed at.
	Index uint64 `json:"index"`
	// Format is the snapshot format the digest was taken over: digests of different
	// formats are not comparable.
	Format int `json:"format"`
	// SHA256 covers the snapshot encoding of the state (cluster, members, entries,
	// tombstones and their horizon), with the applied index left out, so that a state
	// restored from a snapshot at a no-op index hashes as the same state applied from
	// the log.
	SHA256  string `json:"sha256"`
	Members int    `json:"members"`
	Entries int    `json:"entries"`
}

// hashRequest is a wait for the state at one index, served on Raft's FSM goroutine
// (Apply, Restore) or by HashAt itself.
type hashRequest struct {
	index uint64
	done  chan struct{}
	st    state // the captured state, valid once done is closed and err is nil
	err   error
}

// HashAt returns the digest of the state as it was right after index was applied: at
// once when the state machine is at index, else once Apply reaches it (the state is
// captured in the apply path, just before an entry past index changes it). It fails
// with ErrIndexPassed when an entry past index was applied already, and with ctx's
// error when the index is not reached in time. The digest is computed outside the
// FSM's lock, on a copy of the maps (as Snapshot takes).
func (f *FSM) HashAt(ctx context.Context, index uint64) (StateHash, error) {
	req := &hashRequest{index: index, done: make(chan struct{})}
	f.mu.Lock()
	switch {
	case f.applied > index:
		applied := f.applied
		f.mu.Unlock()
		return StateHash{}, fmt.Errorf("%w: asked for the state at index %d, this node has applied %d", ErrIndexPassed, index, applied)
	case f.applied == index:
		req.st = f.st.clone()
		close(req.done)
	default:
		f.hashReqs = append(f.hashReqs, req)
	}
	f.mu.Unlock()
	select {
	case <-req.done:
	case <-ctx.Done():
		f.mu.Lock()
		f.dropHashRequest(req)
		f.mu.Unlock()
		select {
		case <-req.done: // served meanwhile
		default:
			return StateHash{}, fmt.Errorf("state at index %d not reached (applied %d): %w", index, f.AppliedIndex(), ctx.Err())
		}
	}
	if req.err != nil {
		return StateHash{}, req.err
	}
	defer req.st.seg.unpin()
	return hashState(req.st, index)
}

func (f *FSM) dropHashRequest(req *hashRequest) {
	for i, r := range f.hashReqs {
		if r == req {
			f.hashReqs = append(f.hashReqs[:i], f.hashReqs[i+1:]...)
			return
		}
	}
}

// serveHashesLocked is called with f.mu held at two points of the apply path: before
// the entry at next changes the state (capturing every request for an index below next:
// the state is still theirs), and after it (capturing the requests for exactly next).
// After a Restore to index next, requests below it fail with ErrIndexPassed.
func (f *FSM) serveHashesLocked(next uint64, after, restored bool) {
	if len(f.hashReqs) == 0 {
		return
	}
	keep := f.hashReqs[:0]
	for _, r := range f.hashReqs {
		switch {
		case r.index == next && after:
			r.st = f.st.clone()
		case r.index < next && !after:
			r.st = f.st.clone()
		case r.index < next && restored:
			r.err = fmt.Errorf("%w: a snapshot at index %d replaced the state before index %d was reached", ErrIndexPassed, next, r.index)
		default:
			keep = append(keep, r)
			continue
		}
		close(r.done)
	}
	for i := len(keep); i < len(f.hashReqs); i++ {
		f.hashReqs[i] = nil
	}
	f.hashReqs = keep
}

// hashState digests st in the snapshot encoding, with the applied index left out.
func hashState(st state, index uint64) (StateHash, error) {
	h := sha256.New()
	snap := &fsmSnapshot{st: st, applied: 0}
	if err := snap.write(h); err != nil {
		return StateHash{}, fmt.Errorf("hash the state at index %d: %w", index, err)
	}
	return StateHash{Index: index, Format: SnapshotFormat, SHA256: hex.EncodeToString(h.Sum(nil)),
		Members: len(st.members), Entries: len(st.entries)}, nil
}
