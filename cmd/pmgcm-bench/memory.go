package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/pmgcm/pmgcm/api"
	apiclient "github.com/pmgcm/pmgcm/api/client"
	"github.com/pmgcm/pmgcm/internal/proc"
)

// Memory workload (issue 16): the master's resident set after it holds memEntries
// configuration entries of memValue bytes, and after memLists full `config list` calls
// and as many `quarantine list` calls; the target is RSS <= 2x the data.
const (
	memEntries = 20000
	memValue   = 1024
	memLists   = 5
	memWriters = 16
)

func (b *bencher) memory(ctx context.Context) error {
	leader, err := b.c.leader(ctx)
	if err != nil {
		return err
	}
	pid, err := daemonPID(leader)
	if err != nil {
		return err
	}
	value := []byte(strings.Repeat("m", memValue))
	var wg sync.WaitGroup
	errs := make(chan error, memWriters)
	for w := 0; w < memWriters; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			cl := client(leader)
			for i := w; i < memEntries; i += memWriters {
				if _, err := cl.ConfigSet(ctx, fmt.Sprintf("bench/mem/%05d", i), value, apiclient.WriteOptions{}); err != nil {
					errs <- err
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return fmt.Errorf("memory: fill: %w", err)
	}
	afterFill, err := rssMiB(pid)
	if err != nil {
		return err
	}
	var data int64
	maxRSS := afterFill
	cl := client(leader)
	for i := 0; i < memLists; i++ {
		var sum int64
		if _, err := cl.ConfigListEach(ctx, "", apiclient.ReadOptions{}, func(e api.ConfigEntry) error {
			sum += int64(len(e.Key) + e.Size)
			return nil
		}); err != nil {
			return fmt.Errorf("memory: config list: %w", err)
		}
		if err := cl.QuarantineListEach(ctx, "", "", "", func(api.QuarantineMessage) error { return nil }); err != nil {
			return fmt.Errorf("memory: quarantine list: %w", err)
		}
		data = sum
		r, err := rssMiB(pid)
		if err != nil {
			return err
		}
		maxRSS = max(maxRSS, r)
	}
	last, err := rssMiB(pid)
	if err != nil {
		return err
	}
	anon, err := procStatusMiB(pid, "RssAnon")
	if err != nil {
		return err
	}
	dataMiB := float64(data) / (1 << 20)
	fmt.Println(line("memory", kv{"entries", memEntries}, kv{"value_bytes", memValue}, kv{"lists", memLists},
		kv{"data_mib", fmt.Sprintf("%.1f", dataMiB)}, kv{"rss_after_fill_mib", fmt.Sprintf("%.1f", afterFill)},
		kv{"rss_max_mib", fmt.Sprintf("%.1f", maxRSS)}, kv{"rss_after_lists_mib", fmt.Sprintf("%.1f", last)},
		kv{"rss_anon_after_lists_mib", fmt.Sprintf("%.1f", anon)},
		kv{"rss_per_data", fmt.Sprintf("%.2f", maxRSS/dataMiB)}))
	return nil
}

// daemonPID reads the PID that the daemon keeps in its data directory's LOCK file.
func daemonPID(n *node) (int, error) {
	b, err := os.ReadFile(filepath.Join(n.dataDir, "LOCK"))
	if err != nil {
		return 0, fmt.Errorf("memory: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("memory: PID in %s: %w", filepath.Join(n.dataDir, "LOCK"), err)
	}
	return pid, nil
}

// rssMiB is VmRSS of /proc/PID/status, in MiB.
func rssMiB(pid int) (float64, error) { return procStatusMiB(pid, "VmRSS") }

// procStatusMiB is the field (a size) of /proc/PID/status, in MiB.
func procStatusMiB(pid int, field string) (float64, error) {
	b, err := proc.StatusBytes(pid, field)
	if err != nil {
		return 0, fmt.Errorf("memory: %w", err)
	}
	return float64(b) / (1 << 20), nil
}
