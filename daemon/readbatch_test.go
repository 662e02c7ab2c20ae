package daemon

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/internal/testutil"
	"github.com/pmgcm/pmgcm/raftnode"
)

// TestReadBatchJoinsARoundStartedAfterIt: a read that arrives while a round runs gets
// the index of a later round (one that began after it arrived), and the reads waiting
// meanwhile share that one round.
func TestReadBatchJoinsARoundStartedAfterIt(t *testing.T) {
	var rounds atomic.Uint64
	release := make(chan struct{})
	started := make(chan struct{}, 10)
	b := newReadBatch(time.Minute, func(ctx context.Context) (uint64, error) {
		n := rounds.Add(1)
		started <- struct{}{}
		<-release
		return n * 10, nil
	})
	ctx := context.Background()
	first := make(chan uint64)
	go func() {
		idx, err := b.index(ctx)
		if err != nil {
			t.Error(err)
		}
		first <- idx
	}()
	<-started // round 1 runs
	const waiting = 8
	var wg sync.WaitGroup
	got := make([]uint64, waiting)
	var joined sync.WaitGroup
	joined.Add(waiting)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			joined.Done()
			idx, err := b.index(ctx)
			if err != nil {
				t.Error(err)
			}
			got[i] = idx
		}()
	}
	joined.Wait()
	// The waiting reads must have entered index before round 1 ends; poll until every
	// one of them holds the pending round (they block on it).
	testutil.Poll(t, "the waiting reads hold the next round", 10*time.Second, testutil.Cond(func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.next != nil
	}))
	release <- struct{}{} // round 1 ends
	if idx := <-first; idx != 10 {
		t.Fatalf("first read got %d, want 10 (round 1)", idx)
	}
	<-started // round 2 runs, for the waiting reads
	close(release)
	wg.Wait()
	for i, idx := range got {
		// A read that joined before round 1 ended shares round 2; none may get round 1.
		if idx < 20 {
			t.Errorf("read %d got index %d of a round that began before it", i, idx)
		}
	}
	if n := rounds.Load(); n > 3 {
		t.Errorf("%d rounds for %d waiting reads, want them shared", n, waiting)
	}
}

// TestReadBatchErrorAndCallerTimeout: a round's error reaches every read of it; a
// caller whose context ends stops waiting with ErrTimeout while the round goes on.
func TestReadBatchErrorAndCallerTimeout(t *testing.T) {
	boom := errors.New("boom")
	b := newReadBatch(time.Minute, func(ctx context.Context) (uint64, error) { return 0, boom })
	if _, err := b.index(context.Background()); !errors.Is(err, boom) {
		t.Fatalf("index: %v, want the round's error", err)
	}
	block := make(chan struct{})
	defer close(block)
	b = newReadBatch(time.Minute, func(ctx context.Context) (uint64, error) { <-block; return 1, nil })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := b.index(ctx); !errors.Is(err, raftnode.ErrTimeout) {
		t.Fatalf("index with an ended context: %v, want ErrTimeout", err)
	}
}

// TestReadBatchRoundEndsBeforeReadsDeadline: a round that waits for a master that never
// answers ends before its earliest read gives up, so the read gets the round's verdict
// (no quorum here) rather than a bare timeout.
func TestReadBatchRoundEndsBeforeReadsDeadline(t *testing.T) {
	noQuorum := fmt.Errorf("%w: no quorum: 1 of 3 voters reachable", raftnode.ErrNoLeader)
	b := newReadBatch(time.Minute, func(ctx context.Context) (uint64, error) {
		<-ctx.Done()
		return 0, noQuorum
	})
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if _, err := b.index(ctx); !errors.Is(err, raftnode.ErrNoLeader) {
		t.Fatalf("index with no master: %v, want the round's no quorum", err)
	}
}

// TestReadBatchImpatientReadCutsNoOtherShort: a round bounded by one read's short deadline
// fails for it, and the read sharing that round with time left joins the next round and
// gets its index, instead of failing with the impatient one.
func TestReadBatchImpatientReadCutsNoOtherShort(t *testing.T) {
	var rounds atomic.Int64
	started := make(chan struct{}, 4)
	b := newReadBatch(time.Minute, func(ctx context.Context) (uint64, error) {
		if rounds.Add(1) == 1 {
			started <- struct{}{}
			<-ctx.Done() // the master answers only after the first round's end
			return 0, fmt.Errorf("%w: %v", raftnode.ErrTimeout, ctx.Err())
		}
		return 42, nil
	})
	short, cancelShort := context.WithTimeout(context.Background(), 400*time.Millisecond)
	defer cancelShort()
	shortErr := make(chan error, 1)
	go func() {
		_, err := b.index(short)
		shortErr <- err
	}()
	<-started
	// While round 1 runs, a second short read and the patient one join round 2, bounded
	// by the second short read's deadline; round 2 fails at its end as round 1 does.
	rounds.Store(0)
	short2, cancelShort2 := context.WithTimeout(context.Background(), 600*time.Millisecond)
	defer cancelShort2()
	go func() {
		_, err := b.index(short2)
		shortErr <- err
	}()
	long, cancelLong := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancelLong()
	idx, err := b.index(long)
	if err != nil || idx != 42 {
		t.Fatalf("patient read: %d, %v; want 42 from the round after the cut one", idx, err)
	}
	for i := 0; i < 2; i++ {
		if err := <-shortErr; !errors.Is(err, raftnode.ErrTimeout) {
			t.Errorf("short read: %v, want a timeout", err)
		}
	}
}

// TestReadBatchFullRoundNotRetried: a round that ran its full timeout and failed fails
// every read in it, with or without deadlines of their own: none waits for a round more.
func TestReadBatchFullRoundNotRetried(t *testing.T) {
	var rounds atomic.Int64
	noQuorum := fmt.Errorf("%w: no quorum", raftnode.ErrNoLeader)
	b := newReadBatch(300*time.Millisecond, func(ctx context.Context) (uint64, error) {
		rounds.Add(1)
		<-ctx.Done()
		return 0, noQuorum
	})
	long, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, ctx := range []context.Context{context.Background(), long} {
		if _, err := b.index(ctx); !errors.Is(err, raftnode.ErrNoLeader) {
			t.Fatalf("read with no master: %v, want the round's no quorum", err)
		}
	}
	if n := rounds.Load(); n != 2 {
		t.Fatalf("%d rounds for two reads one after the other, want 2 (no retry of a full round)", n)
	}
}
