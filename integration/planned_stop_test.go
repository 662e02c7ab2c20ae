package integration

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	apiclient "github.com/pmgcm/pmgcm/api/client"
	"github.com/pmgcm/pmgcm/internal/testutil"
)

// TestPlannedMasterStopFollowerWrites: writers through both followers while the master
// gets SIGTERM. Every write through a follower is acknowledged (the old master answers
// "shutting down" before proposing, the followers wait for the next master and send it
// there), and every acknowledged write is there afterwards, read linearizably.
func TestPlannedMasterStopFollowerWrites(t *testing.T) {
	c := newCluster(t, 3)
	c.form()
	master, followers := c.roles()

	ctx, stopWriters := context.WithCancel(context.Background())
	defer stopWriters()
	var (
		mu     sync.Mutex
		acked  = map[string]string{}
		failed []error
		wg     sync.WaitGroup
	)
	for _, f := range followers {
		for w := 0; w < 2; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				cl := apiclient.New(f.Socket)
				for i := 0; ctx.Err() == nil; i++ {
					key, val := fmt.Sprintf("stop/%s-%d/%d", f.Name, w, i), fmt.Sprint(i)
					octx, cancel := context.WithTimeout(ctx, 10*time.Second)
					_, err := cl.ConfigSet(octx, key, []byte(val), apiclient.WriteOptions{})
					cancel()
					mu.Lock()
					switch {
					case err == nil:
						acked[key] = val
					case ctx.Err() == nil:
						failed = append(failed, fmt.Errorf("%s: %w", key, err))
					}
					mu.Unlock()
				}
			}()
		}
	}
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acked)
	}
	testutil.Poll(t, "writes acknowledged before the stop", 10*time.Second, func() error {
		if count() < 50 {
			return errors.New("fewer than 50")
		}
		return nil
	})
	master.Stop() // SIGTERM; fails the test unless it exits 0
	before := count()
	testutil.Poll(t, "writes acknowledged after the stop", 15*time.Second, func() error {
		if count() < before+50 {
			return errors.New("fewer than 50 more")
		}
		return nil
	})
	stopWriters()
	wg.Wait()
	if len(failed) > 0 {
		t.Fatalf("%d writes through the followers failed across the master's stop, the first: %v", len(failed), failed[0])
	}
	cl := apiclient.New(followers[0].Socket)
	for k, v := range acked {
		got, err := cl.ConfigGet(context.Background(), k, apiclient.ReadOptions{})
		if err != nil || string(got.Value) != v {
			t.Fatalf("acknowledged %s=%s, read back %v, %v", k, v, got, err)
		}
	}
	t.Logf("%d writes acknowledged, none failed", len(acked))
}
