package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/api"
	apiclient "github.com/pmgcm/pmgcm/api/client"
	"github.com/pmgcm/pmgcm/internal/proc"
	"github.com/pmgcm/pmgcm/internal/testutil"
)

// The memory test's data: entries of memValue bytes (a size class of its own: no rounding).
const (
	memEntries = 3000
	memValue   = 8 << 10
	memWriters = 8
	memLists   = 3
)

// procStatusBytes returns a size field of /proc/PID/status, in bytes.
func procStatusBytes(t *testing.T, pid int, field string) float64 {
	t.Helper()
	b, err := proc.StatusBytes(pid, field)
	if err != nil {
		t.Fatal(err)
	}
	return float64(b)
}

// TestMemoryBoundedByData (issue 16): a node holding 24 MiB of configuration, after full
// config and quarantine lists, keeps the Go runtime's memory within twice the data, and
// its heap goal (where the next collection starts, whatever the moment of the scrape)
// under the data itself: the values are in the state machine's spill files, not in the
// heap (fsm.SpillTo), and the memory limit policy (internal/memlimit) bounds the rest.
// The runtime's figures do not count the race detector's shadow memory; RssAnon and
// VmRSS are checked as well when the daemons are built without it (PMGCM_TEST_NORACE=1).
func TestMemoryBoundedByData(t *testing.T) {
	c := newCluster(t, 1)
	urls := withMetrics(t, c)
	n := c.Nodes[0]
	n.Start()
	n.CLI("create")
	n.WaitMaster(10 * time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	value := bytes.Repeat([]byte("m"), memValue)
	var wg sync.WaitGroup
	errs := make(chan error, memWriters)
	for w := 0; w < memWriters; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < memEntries; i += memWriters {
				if _, err := n.API().ConfigSet(ctx, fmt.Sprintf("mem/%05d", i), value, apiclient.WriteOptions{}); err != nil {
					errs <- err
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		t.Fatalf("fill: %v", err)
	}
	var data float64
	for i := 0; i < memLists; i++ {
		var sum int
		if _, err := n.API().ConfigListEach(ctx, "", apiclient.ReadOptions{}, func(e api.ConfigEntry) error {
			sum += len(e.Key) + e.Size
			return nil
		}); err != nil {
			t.Fatalf("config list: %v", err)
		}
		if err := n.API().QuarantineListEach(ctx, "", "", "", func(api.QuarantineMessage) error { return nil }); err != nil {
			t.Fatalf("quarantine list: %v", err)
		}
		data = float64(sum)
	}
	if want := float64(memEntries * (len("mem/00000") + memValue)); data < want {
		t.Fatalf("the lists counted %.0f bytes of data, want at least %.0f", data, want)
	}

	var goal, inUse float64
	testutil.Poll(t, "the Go memory metrics", 10*time.Second, func() error {
		m, err := scrape(urls[n])
		if err != nil {
			return err
		}
		var ok1, ok2, ok3 bool
		var sys, released float64
		goal, ok1 = sumOf(m, "go_memstats_next_gc_bytes")
		sys, ok2 = sumOf(m, "go_memstats_sys_bytes")
		released, ok3 = sumOf(m, "go_memstats_heap_released_bytes")
		if !ok1 || !ok2 || !ok3 {
			return fmt.Errorf("missing go_memstats_next_gc_bytes, _sys_bytes or _heap_released_bytes")
		}
		inUse = sys - released
		// Where the values are: all of them on disk, the file no smaller than they are.
		onDisk, _ := sumOf(m, "pmgcm_config_value_bytes", `place="disk"`)
		inMem, _ := sumOf(m, "pmgcm_config_value_bytes", `place="memory"`)
		file, _ := sumOf(m, "pmgcm_config_spill_file_bytes")
		if onDisk != memEntries*memValue || inMem != 0 || file < onDisk {
			return fmt.Errorf("pmgcm_config_value_bytes disk %.0f, memory %.0f, spill file %.0f: want %d on disk, none in memory",
				onDisk, inMem, file, memEntries*memValue)
		}
		return nil
	})
	const mib = 1 << 20
	pid := n.process().Pid()
	anon := procStatusBytes(t, pid, "RssAnon")
	t.Logf("data %.1f MiB: heap goal %.1f MiB, Go memory in use %.1f MiB, RssAnon %.1f MiB, VmRSS %.1f MiB",
		data/mib, goal/mib, inUse/mib, anon/mib, procStatusBytes(t, pid, "VmRSS")/mib)
	// With the values in the heap the goal was 1.25 x the live heap, over the data; with
	// them spilled about 0.75 x (the raft log cache's last 512 entries, 4 MiB of 8 KiB
	// values, the entry map, buffers of a few MiB, Go's doubling of that).
	if limit := data; goal > limit {
		t.Errorf("heap goal %.1f MiB for %.1f MiB of data, want at most %.1f MiB (the data)", goal/mib, data/mib, limit/mib)
	}
	// About 1.1 x the data; 1.85 x with the values in the heap; 4 MiB of slack over 2 x
	// for what the moment of the scrape changes.
	if limit := 2*data + 4*mib; inUse > limit {
		t.Errorf("Go memory in use %.1f MiB for %.1f MiB of data, want at most %.1f MiB (2x + 4 MiB)", inUse/mib, data/mib, limit/mib)
	}
	if os.Getenv("PMGCM_TEST_NORACE") != "" {
		if limit := 2*data + 4*mib; anon > limit {
			t.Errorf("RssAnon %.1f MiB for %.1f MiB of data, want at most %.1f MiB (2x + 4 MiB)", anon/mib, data/mib, limit/mib)
		}
		// The target itself (issue 16): VmRSS, the binary's pages included (about 16 MiB),
		// at most twice the data. 1.63 x when written; 2.4 x with the values in the heap.
		if rss := procStatusBytes(t, pid, "VmRSS"); rss > 2*data {
			t.Errorf("VmRSS %.1f MiB for %.1f MiB of data, want at most %.1f MiB (2x)", rss/mib, data/mib, 2*data/mib)
		}
	}
}

// TestSpilledValuesRebuiltAfterKill: the values kept in DATA/fsm-values are a cache of the
// Raft state. A node killed with -9 and started again reads every value back as written,
// and the files of the run before are gone (the new run writes its own from the
// snapshot and the log).
func TestSpilledValuesRebuiltAfterKill(t *testing.T) {
	c := newCluster(t, 1)
	n := c.Nodes[0]
	n.Start()
	n.CLI("create")
	n.WaitMaster(10 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	value := func(i int) []byte { return bytes.Repeat([]byte{byte('a' + i%26)}, 2000+i) }
	for i := range 100 {
		if _, err := n.API().ConfigSet(ctx, fmt.Sprintf("spill/%03d", i), value(i), apiclient.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	spill := filepath.Join(n.DataDir, "fsm-values")
	before, err := filepath.Glob(filepath.Join(spill, "*.seg"))
	if err != nil || len(before) == 0 {
		t.Fatalf("no segment file under %s: %v %v", spill, before, err)
	}
	stale := filepath.Join(spill, "999.seg")
	if err := os.WriteFile(stale, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	n.Kill()
	n.Start()
	n.WaitMaster(20 * time.Second)
	for i := range 100 {
		key := fmt.Sprintf("spill/%03d", i)
		v, err := n.API().ConfigGet(ctx, key, apiclient.ReadOptions{})
		if err != nil {
			t.Fatalf("%s after the restart: %v", key, err)
		}
		if !bytes.Equal(v.Value, value(i)) {
			t.Fatalf("%s after the restart: %d bytes, want %d as written", key, len(v.Value), len(value(i)))
		}
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Fatalf("the stale segment %s survived the restart: %v", stale, err)
	}
}

// TestSpillDirUnusableStillStarts: a DATA/fsm-values that cannot be made (here a plain
// file stands in its place) does not stop pmgclusterd: it says what to do, keeps the
// values in memory, and serves them (pmgcm_config_value_bytes shows where they are).
func TestSpillDirUnusableStillStarts(t *testing.T) {
	c := newCluster(t, 1)
	urls := withMetrics(t, c)
	n := c.Nodes[0]
	if err := os.MkdirAll(n.DataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(n.DataDir, "fsm-values"), []byte("not a directory"), 0o600); err != nil {
		t.Fatal(err)
	}
	n.Start()
	n.CLI("create")
	n.WaitMaster(10 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	value := bytes.Repeat([]byte("u"), 4000)
	if _, err := n.API().ConfigSet(ctx, "spill/unusable", value, apiclient.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	v, err := n.API().ConfigGet(ctx, "spill/unusable", apiclient.ReadOptions{})
	if err != nil || !bytes.Equal(v.Value, value) {
		t.Fatalf("ConfigGet: %v (%d bytes)", err, len(v.Value))
	}
	if !strings.Contains(n.Log(), "configuration values stay in memory this run") {
		t.Fatalf("the log does not say the values stay in memory:\n%s", n.Log())
	}
	testutil.Poll(t, "the value counted in memory", 10*time.Second, func() error {
		m, err := scrape(urls[n])
		if err != nil {
			return err
		}
		if inMem, _ := sumOf(m, "pmgcm_config_value_bytes", `place="memory"`); inMem < float64(len(value)) {
			return fmt.Errorf("pmgcm_config_value_bytes{place=\"memory\"} = %.0f", inMem)
		}
		return nil
	})
}
