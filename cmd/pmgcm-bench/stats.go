package main

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// latencies collects the latencies of one workload; safe for concurrent use.
type latencies struct {
	mu  sync.Mutex
	d   []time.Duration
	err int
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

func (l *latencies) fail() {
	l.mu.Lock()
	l.err++
	l.mu.Unlock()
}

// snapshot returns a sorted copy of the latencies and the error count.
func (l *latencies) snapshot() ([]time.Duration, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := append([]time.Duration(nil), l.d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s, l.err
}

// percentile returns the p-th percentile (0 < p <= 100) of sorted by the nearest-rank
// method; 0 for an empty slice.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

// median returns the median of ds (not necessarily sorted): the lower middle for an
// even count, so that it is always a measured value.
func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return percentile(s, 50)
}

// ms formats d in milliseconds with two decimals.
func ms(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 2, 64)
}

// msList formats ds as comma-separated milliseconds; "-" for a missing value (< 0).
func msList(ds []time.Duration) string {
	parts := make([]string, len(ds))
	for i, d := range ds {
		if d < 0 {
			parts[i] = "-"
		} else {
			parts[i] = ms(d)
		}
	}
	return strings.Join(parts, ",")
}

// rate formats n events over d as events per second with one decimal.
func rate(n int, d time.Duration) string {
	if d <= 0 {
		return "0.0"
	}
	return strconv.FormatFloat(float64(n)/d.Seconds(), 'f', 1, 64)
}

// kv is one key=value field of a result line.
type kv struct {
	k string
	v any
}

// line formats a result line: "workload=NAME k=v ...". Values with spaces are quoted.
func line(name string, fields ...kv) string {
	var b strings.Builder
	b.WriteString("workload=")
	b.WriteString(name)
	for _, f := range fields {
		v := fmt.Sprint(f.v)
		if v == "" || strings.ContainsAny(v, " \t\"=") {
			v = strconv.Quote(v)
		}
		fmt.Fprintf(&b, " %s=%s", f.k, v)
	}
	return b.String()
}

// latencyFields are the usual fields of a throughput workload.
func latencyFields(sorted []time.Duration, errs int, elapsed time.Duration) []kv {
	return []kv{
		{"ops", len(sorted)},
		{"ops_per_s", rate(len(sorted), elapsed)},
		{"p50_ms", ms(percentile(sorted, 50))},
		{"p90_ms", ms(percentile(sorted, 90))},
		{"p99_ms", ms(percentile(sorted, 99))},
		{"max_ms", ms(percentile(sorted, 100))},
		{"errors", errs},
	}
}
