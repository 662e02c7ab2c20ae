package cluster

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/fsm"
	"github.com/pmgcm/pmgcm/internal/sharedop"
	"github.com/pmgcm/pmgcm/raftnode"
)

// Batched forwarding (issue 16): the writes that arrive on a non-master node at the same
// time go to the master in one request, PathApplyBatch, rather than one PathApply each;
// the master proposes them at once, so that they also share Raft's batches. It is a
// feature of level 2 (version.LevelClusterVersion, release 0.2.0): a node uses it only
// while the cluster version says every member serves it, and a master that answers 404
// (a build without it) gets the commands one by one (PathApply) again.

// PathApplyBatch takes POST of several fsm-encoded commands (EncodeBatch), on the master,
// and answers ApplyBatchResult: one item per command, in order.
const PathApplyBatch = "/rpc/v1/apply-batch"

const (
	// MaxBatchCommands bounds the commands of one PathApplyBatch request.
	MaxBatchCommands = 64
	// MaxBatchedCommandBytes bounds one command of a batch; a larger one is forwarded
	// alone (PathApply).
	MaxBatchedCommandBytes = 16 << 10
	// MaxBatchBytes bounds the body of PathApplyBatch.
	MaxBatchBytes = binary.MaxVarintLen64 + MaxBatchCommands*(binary.MaxVarintLen64+MaxBatchedCommandBytes)
)

// EncodeBatch writes the body of PathApplyBatch: the number of commands, then each
// command's length and bytes, the numbers as unsigned varints.
func EncodeBatch(cmds [][]byte) []byte {
	n := binary.MaxVarintLen64
	for _, c := range cmds {
		n += binary.MaxVarintLen64 + len(c)
	}
	out := make([]byte, 0, n)
	out = binary.AppendUvarint(out, uint64(len(cmds)))
	for _, c := range cmds {
		out = binary.AppendUvarint(out, uint64(len(c)))
		out = append(out, c...)
	}
	return out
}

// DecodeBatch reads a body written by EncodeBatch. The commands share b's memory. Its
// error wraps ErrBadRequest: more than MaxBatchCommands commands, an empty batch, a
// command longer than MaxBatchedCommandBytes, a truncated body or trailing bytes.
func DecodeBatch(b []byte) ([][]byte, error) {
	n, k := binary.Uvarint(b)
	if k <= 0 {
		return nil, fmt.Errorf("%w: batch: no command count", ErrBadRequest)
	}
	if n == 0 || n > MaxBatchCommands {
		return nil, fmt.Errorf("%w: batch of %d commands (1 to %d)", ErrBadRequest, n, MaxBatchCommands)
	}
	b = b[k:]
	cmds := make([][]byte, 0, n)
	for i := uint64(0); i < n; i++ {
		l, k := binary.Uvarint(b)
		if k <= 0 {
			return nil, fmt.Errorf("%w: batch: command %d has no length", ErrBadRequest, i)
		}
		b = b[k:]
		if l > MaxBatchedCommandBytes || l > uint64(len(b)) {
			return nil, fmt.Errorf("%w: batch: command %d of %d bytes (limit %d, %d left)", ErrBadRequest, i, l, MaxBatchedCommandBytes, len(b))
		}
		cmds = append(cmds, b[:l:l])
		b = b[l:]
	}
	if len(b) != 0 {
		return nil, fmt.Errorf("%w: batch: %d bytes after the last command", ErrBadRequest, len(b))
	}
	return cmds, nil
}

// BatchItem is the master's answer to one command of a batch: its ApplyResult, or the
// HTTP status and api error that PathApply would have answered for it.
type BatchItem struct {
	ApplyResult
	Status int        `json:"status,omitempty"`
	Error  *api.Error `json:"error,omitempty"`
}

// ApplyBatchResult is the answer of PathApplyBatch.
type ApplyBatchResult struct {
	Results []BatchItem `json:"results"`
}

// ApplyBatch sends fsm-encoded commands to the master at addr (PathApplyBatch) and
// returns one item per command.
func (c *Client) ApplyBatch(ctx context.Context, addr string, cmds [][]byte) ([]BatchItem, error) {
	var out ApplyBatchResult
	if err := c.Call(ctx, addr, http.MethodPost, PathApplyBatch, EncodeBatch(cmds), &out); err != nil {
		return nil, err
	}
	if len(out.Results) != len(cmds) {
		// Answered, so taken: each command may have been applied.
		return nil, fmt.Errorf("%w: the master at %s answered %d results for a batch of %d commands",
			raftnode.ErrUnknownOutcome, addr, len(out.Results), len(cmds))
	}
	return out.Results, nil
}

// applyBatch serves PathApplyBatch: every command is applied as PathApply would (the
// Handler's Apply), all at once, and answered in order.
func (s *Service) applyBatch(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBatchBytes))
	if err != nil {
		s.writeErr(w, fmt.Errorf("%w: batch: %v", ErrBadRequest, err))
		return
	}
	cmds, err := DecodeBatch(b)
	if err != nil {
		s.writeErr(w, err)
		return
	}
	items := make([]BatchItem, len(cmds))
	var wg sync.WaitGroup
	for i, raw := range cmds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd, err := fsm.Decode(raw)
			var res ApplyResult
			if err == nil {
				res, err = s.h.Apply(r.Context(), cmd)
			}
			if err != nil {
				items[i] = s.errorItem(err)
				return
			}
			items[i] = BatchItem{ApplyResult: res}
		}()
	}
	wg.Wait()
	writeJSON(w, ApplyBatchResult{Results: items})
}

// errorItem is the item of a command that failed with err: what the ErrorWriter
// answers for it.
func (s *Service) errorItem(err error) BatchItem {
	rec := &itemRecorder{h: http.Header{}, status: http.StatusOK}
	s.writeErr(rec, err)
	var e api.Error
	if json.Unmarshal(rec.body.Bytes(), &e) != nil || e.Message == "" {
		e = api.Error{Code: api.CodeInternal, Message: err.Error()}
	}
	return BatchItem{Status: rec.status, Error: &e}
}

// itemRecorder is a minimal http.ResponseWriter that keeps the status and the body.
type itemRecorder struct {
	h      http.Header
	status int
	body   bytes.Buffer
}

func (r *itemRecorder) Header() http.Header         { return r.h }
func (r *itemRecorder) Write(b []byte) (int, error) { return r.body.Write(b) }
func (r *itemRecorder) WriteHeader(status int)      { r.status = status }

// maxBatchesInFlight is how many batches a node sends to the master at a time: while
// they are under way, the writes that arrive wait and make up the next one.
const maxBatchesInFlight = 2

// batchTimeout bounds one batch, as the write path bounds one forwarded write.
const batchTimeout = 5 * time.Second

// noBatchPause is how long a node forwards one command at a time after a master
// answered that it does not serve PathApplyBatch.
const noBatchPause = time.Minute

// Batcher forwards commands to the master, the ones that arrive together in one
// request (PathApplyBatch). Use it only at a cluster version that has it (level 2).
type Batcher struct {
	fwd *Forwarder

	mu         sync.Mutex
	queue      []*batchCall
	inFlight   int
	noBatchTil time.Time // a master answered 404: one command at a time until then
}

// batchCall is one command waiting for its batch's answer; res and err are set before
// done is closed. taken is set (under Batcher.mu) once a batch holds it.
type batchCall struct {
	cmd      []byte
	deadline time.Time // the caller's, zero when it has none
	done     chan struct{}
	taken    bool
	res      ApplyResult
	err      error
}

// tooLate says whether c's deadline is less than batchAnswerMargin after now: a request
// for it would end before it started, and answer with the forwarder's verdict on no
// attempt at all ("no quorum"), so it is not sent.
func (c *batchCall) tooLate(now time.Time) bool {
	return !c.deadline.IsZero() && !c.deadline.After(now.Add(batchAnswerMargin))
}

// NewBatcher returns a Batcher that sends through f.
func NewBatcher(f *Forwarder) *Batcher { return &Batcher{fwd: f} }

// Apply forwards cmd, fsm-encoded, to the master, in a batch with the other commands
// forwarded meanwhile, and returns what PathApply would: the outcome of CallLeader with
// Client.Apply, with the same guarantees (a command that may have reached the master is
// never sent again; one refused before it was proposed, "not leader", goes to the next
// master). A command larger than MaxBatchedCommandBytes goes alone.
func (b *Batcher) Apply(ctx context.Context, cmd []byte) (ApplyResult, error) {
	b.mu.Lock()
	if len(cmd) > MaxBatchedCommandBytes || time.Now().Before(b.noBatchTil) {
		b.mu.Unlock()
		return b.single(ctx, cmd)
	}
	c := &batchCall{cmd: cmd, done: make(chan struct{})}
	if d, ok := ctx.Deadline(); ok {
		c.deadline = d
	}
	b.queue = append(b.queue, c)
	if b.inFlight < maxBatchesInFlight {
		b.startLocked()
	}
	b.mu.Unlock()
	select {
	case <-c.done:
		return c.res, c.err
	case <-ctx.Done():
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if c.taken {
		return ApplyResult{}, fmt.Errorf("%w: the write was sent to the master in a batch, and no answer came before the deadline (%v)",
			raftnode.ErrUnknownOutcome, ctx.Err())
	}
	for i, q := range b.queue {
		if q == c {
			b.queue = append(b.queue[:i], b.queue[i+1:]...)
			break
		}
	}
	return ApplyResult{}, fmt.Errorf("%w: the write waited for its batch to the master until the deadline (%v); it was not sent",
		raftnode.ErrTimeout, ctx.Err())
}

// single forwards cmd alone (PathApply).
func (b *Batcher) single(ctx context.Context, cmd []byte) (ApplyResult, error) {
	return b.fwd.Apply(ctx, cmd)
}

// startLocked sends the next batch, from the front of the queue; b.mu is held. A call
// whose deadline is less than batchAnswerMargin away is left in the queue, where its
// caller gives up and is answered that it was not sent (Apply): its batch would end
// before it started (batchDeadline), and would answer it, and every other call in it,
// with the forwarder's verdict on no attempt at all ("no quorum").
func (b *Batcher) startLocked() {
	now := time.Now()
	batch := make([]*batchCall, 0, min(len(b.queue), MaxBatchCommands))
	rest := b.queue[:0] // filtered in place: rest never gets ahead of the range
	for _, c := range b.queue {
		if len(batch) < MaxBatchCommands && !c.tooLate(now) {
			batch = append(batch, c)
		} else {
			rest = append(rest, c)
		}
	}
	clear(b.queue[len(rest):])
	b.queue = rest
	if len(batch) == 0 {
		return
	}
	for _, c := range batch {
		c.taken = true
	}
	b.inFlight++
	go b.send(batch)
}

// batchDeadline is when a batch of calls must have its answer: batchTimeout from now, or
// batchAnswerMargin before the earliest caller gives up, if that is sooner. A batch that
// waits for a master until a caller's own deadline could only answer that caller
// "unknown outcome"; ended in time, it answers what the forwarder found (no quorum, say).
func batchDeadline(batch []*batchCall, now time.Time) time.Time {
	var earliest time.Time
	for _, c := range batch {
		earliest = sharedop.Earliest(earliest, c.deadline)
	}
	return sharedop.Deadline(now, batchTimeout, earliest, batchAnswerMargin)
}

// batchAnswerMargin is how long before a caller's deadline its batch ends.
const batchAnswerMargin = 100 * time.Millisecond

func (b *Batcher) send(batch []*batchCall) {
	ctx, cancel := context.WithDeadline(context.Background(), batchDeadline(batch, time.Now()))
	defer cancel()
	cmds := make([][]byte, len(batch))
	for i, c := range batch {
		cmds[i] = c.cmd
	}
	var items []BatchItem
	err := b.fwd.CallLeader(ctx, false, func(ctx context.Context, addr string) (err error) {
		items, err = b.fwd.Client().ApplyBatch(ctx, addr, cmds)
		return err
	})
	unserved := NotSupported(err) // a master without the path: nothing was applied
	b.mu.Lock()
	b.inFlight--
	if unserved {
		b.noBatchTil = time.Now().Add(noBatchPause)
	}
	if len(b.queue) > 0 && !unserved {
		b.startLocked()
	}
	rest := b.queue
	if unserved {
		b.queue = nil
		for _, c := range rest {
			c.taken = true
		}
	}
	b.mu.Unlock()
	if unserved {
		for _, c := range append(batch, rest...) {
			go b.resolveAlone(c)
		}
		return
	}
	for i, c := range batch {
		if err != nil {
			c.err = err
			close(c.done)
			continue
		}
		it := items[i]
		if it.Error == nil {
			c.res = it.ApplyResult
			close(c.done)
			continue
		}
		ie := &RemoteError{Status: it.Status, E: *it.Error}
		if classify(ie, false) == attemptNotMaster {
			// Refused before it was proposed (that node is no master any more): the
			// command goes to the next master, as CallLeader does with one.
			go b.resolveAlone(c)
			continue
		}
		c.err = ie
		close(c.done)
	}
}

// resolveAlone forwards c's command alone and answers c. One whose deadline is less
// than batchAnswerMargin away is not sent (as startLocked keeps such a call out of a
// batch): its request would end before it started, and answer with the forwarder's
// verdict on no attempt at all ("no quorum").
func (b *Batcher) resolveAlone(c *batchCall) {
	now := time.Now()
	if c.tooLate(now) {
		c.err = fmt.Errorf("%w: the write had %v left when it had to go to the master alone, too little to send it; it was not sent",
			raftnode.ErrTimeout, c.deadline.Sub(now).Round(time.Millisecond))
		close(c.done)
		return
	}
	ctx, cancel := context.WithDeadline(context.Background(), batchDeadline([]*batchCall{c}, now))
	defer cancel()
	c.res, c.err = b.single(ctx, c.cmd)
	close(c.done)
}
