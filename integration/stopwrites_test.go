package integration

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	apiclient "github.com/pmgcm/pmgcm/api/client"
	"github.com/pmgcm/pmgcm/internal/testutil"
)

// TestStopMasterFailsNoForwardedWrite: SIGTERM on the master while the other nodes
// forward configuration writes to it, without pause (DESIGN rule 8: a planned stop stops
// nothing). Every write succeeds: none in flight is cut off into an unknown outcome, and
// none sent while the master stops fails; the followers take them to the next master.
func TestStopMasterFailsNoForwardedWrite(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3)
	c.form()
	old, followers := c.roles()
	var (
		stop   atomic.Bool
		wg     sync.WaitGroup
		mu     sync.Mutex
		failed []error
		writes atomic.Int64
	)
	for fi, f := range followers {
		client := apiclient.New(f.Socket)
		for w := 0; w < 4; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; !stop.Load(); i++ {
					ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
					_, err := client.ConfigSet(ctx, fmt.Sprintf("stop/%d-%d-%d", fi, w, i), []byte("v"), apiclient.WriteOptions{})
					cancel()
					if err != nil {
						mu.Lock()
						failed = append(failed, fmt.Errorf("through %s: %w", f.Name, err))
						mu.Unlock()
						return
					}
					writes.Add(1)
				}
			}()
		}
	}
	waitWrites := func(n int64) {
		testutil.Poll(t, fmt.Sprintf("%d writes", n), 20*time.Second, func() error {
			mu.Lock()
			defer mu.Unlock()
			if len(failed) > 0 {
				return testutil.Stop(fmt.Errorf("a write failed: %w", failed[0]))
			}
			if got := writes.Load(); got < n {
				return fmt.Errorf("%d so far", got)
			}
			return nil
		})
	}
	waitWrites(200)
	old.Stop()
	next := drillWaitMaster(t, followers, 10*time.Second)
	at := writes.Load()
	waitWrites(at + 200)
	stop.Store(true)
	wg.Wait()
	t.Logf("%d writes; %s master after %s stopped", writes.Load(), next.Name, old.Name)
	for _, err := range failed {
		t.Errorf("a write forwarded while the master stopped failed: %v", err)
	}
}
