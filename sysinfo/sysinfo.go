// Package sysinfo reads the host metrics shown in the status table (uptime, load, memory and
// disk use) live from Linux /proc and statfs(2).
//
// It owns only the reading and parsing of those metrics. It imports nothing of this project
// except the api wire types, and it keeps no state: every call reads the host anew.
package sysinfo

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/pmgcm/pmgcm/api"
)

// Files read by Read.
const (
	procUptime  = "/proc/uptime"
	procLoadavg = "/proc/loadavg"
	procMeminfo = "/proc/meminfo"
)

// Read returns the host metrics of this machine: uptime (from /proc/uptime), 1-minute load
// average (/proc/loadavg), memory use in percent ((MemTotal-MemAvailable)/MemTotal from
// /proc/meminfo) and disk use in percent of the filesystem holding dataDir, computed like
// df(1): used/(used+available to unprivileged users), used = blocks - free blocks.
//
// DaemonUptimeSeconds is left 0; the daemon fills it. When some metric cannot be read, Read
// still returns the others, together with an error naming every metric that failed.
func Read(dataDir string) (api.SysInfo, error) {
	var (
		info api.SysInfo
		errs []error
	)
	if b, err := os.ReadFile(procUptime); err != nil {
		errs = append(errs, err)
	} else if info.UptimeSeconds, err = parseUptime(string(b)); err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", procUptime, err))
	}
	if b, err := os.ReadFile(procLoadavg); err != nil {
		errs = append(errs, err)
	} else if info.Load1, err = parseLoadavg(string(b)); err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", procLoadavg, err))
	}
	if b, err := os.ReadFile(procMeminfo); err != nil {
		errs = append(errs, err)
	} else if info.MemPercent, err = parseMeminfo(string(b)); err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", procMeminfo, err))
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dataDir, &st); err != nil {
		errs = append(errs, fmt.Errorf("statfs %s: %w", dataDir, err))
	} else {
		info.DiskPercent = diskPercent(st.Blocks, st.Bfree, st.Bavail)
	}
	return info, errors.Join(errs...)
}

// parseUptime returns the first field of /proc/uptime: seconds since boot.
func parseUptime(s string) (float64, error) {
	return firstFloat(s)
}

// parseLoadavg returns the first field of /proc/loadavg: the 1-minute load average.
func parseLoadavg(s string) (float64, error) {
	return firstFloat(s)
}

// firstFloat parses the first whitespace-separated field of s as a non-negative float.
func firstFloat(s string) (float64, error) {
	fields := strings.Fields(s)
	if len(fields) == 0 {
		return 0, errors.New("empty")
	}
	v, err := strconv.ParseFloat(fields[0], 64)
	if err != nil {
		return 0, err
	}
	if v < 0 {
		return 0, fmt.Errorf("negative value %q", fields[0])
	}
	return v, nil
}

// parseMeminfo returns the memory use in percent from the text of /proc/meminfo:
// (MemTotal-MemAvailable)/MemTotal. Kernels older than 3.14 have no MemAvailable; there it
// falls back to MemFree+Buffers+Cached, the estimate free(1) used before.
func parseMeminfo(s string) (float64, error) {
	vals := make(map[string]uint64)
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			continue
		}
		v, err := strconv.ParseUint(fields[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", name, err)
		}
		vals[name] = v
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	total, ok := vals["MemTotal"]
	if !ok || total == 0 {
		return 0, errors.New("no MemTotal")
	}
	avail, ok := vals["MemAvailable"]
	if !ok {
		free, okFree := vals["MemFree"]
		if !okFree {
			return 0, errors.New("neither MemAvailable nor MemFree")
		}
		avail = free + vals["Buffers"] + vals["Cached"]
	}
	if avail > total {
		avail = total
	}
	return float64(total-avail) * 100 / float64(total), nil
}

// diskPercent computes the use in percent of a filesystem like df(1): the blocks reserved
// for root count neither as used nor as available.
func diskPercent(blocks, bfree, bavail uint64) float64 {
	if bfree > blocks {
		bfree = blocks
	}
	used := blocks - bfree
	if used+bavail == 0 {
		return 0
	}
	return float64(used) * 100 / float64(used+bavail)
}
