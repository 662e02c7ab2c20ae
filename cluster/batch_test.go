package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/fsm"
	"github.com/pmgcm/pmgcm/internal/testutil"
	"github.com/pmgcm/pmgcm/raftnode"
)

// batchHandler applies ConfigSet commands: the index is the order of application, the
// version the value's length; a key in refuseOnce is refused once with "not leader".
type batchHandler struct {
	fakeHandler
	mu         sync.Mutex
	applied    map[string]int
	next       uint64
	refuseOnce map[string]bool
	gate       chan struct{} // when set, every Apply waits for it to close
}

func (h *batchHandler) Apply(_ context.Context, cmd fsm.Command) (ApplyResult, error) {
	if h.gate != nil {
		<-h.gate
	}
	cs, ok := cmd.(fsm.ConfigSet)
	if !ok {
		return ApplyResult{}, fmt.Errorf("%w: not a ConfigSet", ErrBadRequest)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.refuseOnce[cs.Key] {
		delete(h.refuseOnce, cs.Key)
		return ApplyResult{}, &RemoteError{Status: http.StatusServiceUnavailable, E: api.Error{Code: api.CodeNotLeader, Message: "not leader"}}
	}
	if cs.Key == "conflict" {
		return ApplyResult{}, &RemoteError{Status: http.StatusConflict, E: api.Error{Code: api.CodeConflict, Message: "version", Version: 9}}
	}
	h.applied[cs.Key]++
	h.next++
	return ApplyResult{Index: h.next, Version: uint64(len(cs.Value))}, nil
}

// countingMux counts the requests of each path before the service answers them.
type countingMux struct {
	h     http.Handler
	mu    sync.Mutex
	count map[string]int
}

func (c *countingMux) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	c.count[r.URL.Path]++
	c.mu.Unlock()
	c.h.ServeHTTP(w, r)
}

func (c *countingMux) n(path string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.count[path]
}

func newBatchServer(t *testing.T, h http.Handler) (*countingMux, *Batcher) {
	t.Helper()
	cm := &countingMux{h: h, count: map[string]int{}}
	srv := httptest.NewServer(cm)
	t.Cleanup(srv.Close)
	f := newTestForwarder(newFakeRaft(strings.TrimPrefix(srv.URL, "http://")))
	return cm, NewBatcher(f)
}

func encodeSet(t *testing.T, key string, value []byte) []byte {
	t.Helper()
	b, err := fsm.Encode(fsm.ConfigSet{Key: key, Value: value})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestBatcherSharesRequests: concurrent forwarded writes share PathApplyBatch requests;
// each gets its own result, and each is applied once; a command refused with "not
// leader" goes again, alone, and a refusal of another kind comes back as it is.
func TestBatcherSharesRequests(t *testing.T) {
	h := &batchHandler{applied: map[string]int{}, refuseOnce: map[string]bool{"k7": true}, gate: make(chan struct{})}
	cm, b := newBatchServer(t, NewService(h, testWriteErr).RPC())
	const n = 40
	var wg sync.WaitGroup
	res := make([]ApplyResult, n)
	errs := make([]error, n)
	var started atomic.Int32
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			started.Add(1)
			res[i], errs[i] = b.Apply(context.Background(), encodeSet(t, fmt.Sprintf("k%d", i), make([]byte, i)))
		}()
	}
	var conflict error
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, conflict = b.Apply(context.Background(), encodeSet(t, "conflict", nil))
	}()
	// Hold the first batches in the master until every write has been handed over, so
	// that the rest must wait and share a batch.
	testutil.Poll(t, "writes queued behind the batches in flight", 10*time.Second, testutil.Cond(func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return int(started.Load()) == n && b.inFlight == maxBatchesInFlight && len(b.queue) > 0
	}))
	close(h.gate)
	wg.Wait()
	for i := 0; i < n; i++ {
		if errs[i] != nil {
			t.Fatalf("write %d: %v", i, errs[i])
		}
		if res[i].Version != uint64(i) || res[i].Index == 0 {
			t.Errorf("write %d got %+v, not its own result", i, res[i])
		}
		if got := h.applied[fmt.Sprintf("k%d", i)]; got != 1 {
			t.Errorf("write %d applied %d times", i, got)
		}
	}
	var re *RemoteError
	if !errors.As(conflict, &re) || re.E.Code != api.CodeConflict || re.E.Version != 9 || re.Status != http.StatusConflict {
		t.Errorf("the conflicting write: %v, want its RemoteError with code and version", conflict)
	}
	batches, singles := cm.n(PathApplyBatch), cm.n(PathApply)
	if batches >= n/2 {
		t.Errorf("%d batch requests for %d writes: not shared", batches, n)
	}
	if singles != 1 {
		t.Errorf("%d single requests, want 1 (the write refused with not leader)", singles)
	}
}

// TestBatcherMasterWithoutBatches: a master that does not serve PathApplyBatch (404)
// gets the commands one by one, each applied once.
func TestBatcherMasterWithoutBatches(t *testing.T) {
	h := &batchHandler{applied: map[string]int{}}
	svc := NewService(h, testWriteErr)
	old := http.NewServeMux() // a build without the batch path
	old.Handle("POST "+PathApply, svc.RPC())
	cm, b := newBatchServer(t, old)
	for i := 0; i < 3; i++ {
		out, err := b.Apply(context.Background(), encodeSet(t, fmt.Sprintf("k%d", i), []byte("vv")))
		if err != nil || out.Version != 2 {
			t.Fatalf("write %d: %+v, %v", i, out, err)
		}
	}
	if got := cm.n(PathApplyBatch); got != 1 {
		t.Errorf("%d batch requests, want 1 (then one command at a time)", got)
	}
	if got := cm.n(PathApply); got != 3 {
		t.Errorf("%d single requests, want 3", got)
	}
	for k, n := range h.applied {
		if n != 1 {
			t.Errorf("%s applied %d times", k, n)
		}
	}
}

// TestBatchCodec: EncodeBatch and DecodeBatch round-trip, and DecodeBatch refuses the
// bodies that break its bounds with ErrBadRequest.
func TestBatchCodec(t *testing.T) {
	cmds := [][]byte{{1, 2}, {}, bytes.Repeat([]byte{7}, MaxBatchedCommandBytes)}
	got, err := DecodeBatch(EncodeBatch(cmds))
	if err != nil || len(got) != len(cmds) {
		t.Fatalf("round trip: %d commands, %v", len(got), err)
	}
	for i := range cmds {
		if !bytes.Equal(got[i], cmds[i]) {
			t.Errorf("command %d differs", i)
		}
	}
	tooMany := make([][]byte, MaxBatchCommands+1)
	for _, bad := range [][]byte{
		nil, {0}, EncodeBatch(tooMany), EncodeBatch([][]byte{make([]byte, MaxBatchedCommandBytes+1)}),
		append(EncodeBatch(cmds), 0), EncodeBatch(cmds)[:10], {2, 1, 1},
	} {
		if _, err := DecodeBatch(bad); !errors.Is(err, ErrBadRequest) {
			t.Errorf("DecodeBatch(%.20q): %v, want ErrBadRequest", bad, err)
		}
	}
}

// FuzzDecodeBatch: DecodeBatch never panics, fails only with ErrBadRequest, and what it
// accepts encodes back to the same bytes.
func FuzzDecodeBatch(f *testing.F) {
	f.Add(EncodeBatch([][]byte{{1, 2, '{', '}'}}))
	f.Add(EncodeBatch([][]byte{{}, {1}}))
	f.Add([]byte{0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		cmds, err := DecodeBatch(b)
		if err != nil {
			if !errors.Is(err, ErrBadRequest) {
				t.Fatalf("error %v wraps no ErrBadRequest", err)
			}
			return
		}
		if enc := EncodeBatch(cmds); !bytes.Equal(enc, b) && len(b) < 200 {
			// A non-minimal varint decodes too; the sizes must still agree.
			again, err := DecodeBatch(enc)
			if err != nil || len(again) != len(cmds) {
				t.Fatalf("re-encoding of %q does not decode alike: %v", b, err)
			}
		}
	})
}

// FuzzApplyBatchService: arbitrary bodies of PathApplyBatch are answered, never a panic,
// with 200 (one item per command) or 400.
func FuzzApplyBatchService(f *testing.F) {
	f.Add(EncodeBatch([][]byte{{1, 2, '{', '}'}}))
	f.Add([]byte{1, 3, 1, 2, '{'})
	svc := NewService(&fakeHandler{}, testWriteErr)
	f.Fuzz(func(t *testing.T, body []byte) {
		rec := httptest.NewRecorder()
		svc.RPC().ServeHTTP(rec, httptest.NewRequest(http.MethodPost, PathApplyBatch, bytes.NewReader(body)))
		if rec.Code != http.StatusOK && rec.Code != http.StatusBadRequest {
			t.Fatalf("status %d", rec.Code)
		}
	})
}

// TestApplyBatchWire pins PathApplyBatch and the JSON of its answer: a 0.2.0 node and a
// newer one must keep speaking it to each other.
func TestApplyBatchWire(t *testing.T) {
	if PathApplyBatch != "/rpc/v1/apply-batch" {
		t.Errorf("PathApplyBatch = %q", PathApplyBatch)
	}
	for _, c := range []struct {
		v    any
		want string
	}{
		{BatchItem{ApplyResult: ApplyResult{Index: 1, Version: 2, CID: 3}}, `{"index":1,"version":2,"cid":3}`},
		{BatchItem{Status: 409, Error: &api.Error{Code: api.CodeConflict, Message: "m", Version: 4}},
			`{"index":0,"version":0,"cid":0,"status":409,"error":{"code":"version_conflict","error":"m","version":4}}`},
		{ApplyBatchResult{Results: []BatchItem{{}}}, `{"results":[{"index":0,"version":0,"cid":0}]}`},
	} {
		b, err := json.Marshal(c.v)
		if err != nil || string(b) != c.want {
			t.Errorf("%T: %s (%v), want %s", c.v, b, err, c.want)
		}
	}
	if got := EncodeBatch([][]byte{{1, 2}, {3}}); !bytes.Equal(got, []byte{2, 2, 1, 2, 1, 3}) {
		t.Errorf("EncodeBatch = %v", got)
	}
}

// TestBatchAnswersBeforeCallerDeadline: with the master gone (its address refuses
// connections) and no new one elected, a batched write gets the forwarder's verdict, no
// quorum, before its caller's deadline, not "unknown outcome" for a batch that was still
// waiting for a master when the caller gave up (its batch ran on a deadline of its own).
func TestBatchAnswersBeforeCallerDeadline(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	_ = l.Close()
	f := newTestForwarder(newFakeRaft(dead))
	f.cfg.NoQuorum = func() string { return "1 of 3 voters reachable" }
	b := NewBatcher(f)
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = b.Apply(ctx, encodeSet(t, "k", []byte("v")))
	if errors.Is(err, raftnode.ErrUnknownOutcome) || !errors.Is(err, raftnode.ErrNoLeader) {
		t.Fatalf("batched write with the master gone: %v, want no quorum", err)
	}
	if took := time.Since(start); took > 1500*time.Millisecond {
		t.Fatalf("answered after %s, past the caller's deadline", took)
	}
}

// TestBatcherWrongResultCount: a master that answers a batch with a number of results
// other than the commands sent gives each write "unknown outcome" (it took the batch, so
// any of them may be applied), and none is sent again alone.
func TestBatcherWrongResultCount(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+PathApplyBatch, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"results":[]}`))
	})
	cm, b := newBatchServer(t, mux)
	_, err := b.Apply(context.Background(), encodeSet(t, "k", []byte("v")))
	if !errors.Is(err, raftnode.ErrUnknownOutcome) || !strings.Contains(err.Error(), "answered 0 results for a batch of 1") {
		t.Fatalf("write answered with no result: %v, want unknown outcome naming the count", err)
	}
	if got := cm.n(PathApply); got != 0 {
		t.Errorf("%d single requests after an answered batch, want 0", got)
	}
}
