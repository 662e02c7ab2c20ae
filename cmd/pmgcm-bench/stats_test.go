package main

import (
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	var s []time.Duration
	for i := 1; i <= 100; i++ {
		s = append(s, time.Duration(i)*time.Millisecond)
	}
	for _, c := range []struct {
		p    float64
		want time.Duration
	}{{50, 50 * time.Millisecond}, {99, 99 * time.Millisecond}, {100, 100 * time.Millisecond}, {0.1, time.Millisecond}} {
		if got := percentile(s, c.p); got != c.want {
			t.Errorf("percentile(%v) = %v, want %v", c.p, got, c.want)
		}
	}
	if got := percentile(nil, 50); got != 0 {
		t.Errorf("percentile(nil) = %v", got)
	}
	if got := percentile([]time.Duration{7}, 99); got != 7 {
		t.Errorf("percentile of one = %v", got)
	}
}

func TestMedian(t *testing.T) {
	if got := median([]time.Duration{30, 10, 20}); got != 20 {
		t.Errorf("median odd = %v", got)
	}
	if got := median([]time.Duration{40, 10, 30, 20}); got != 20 {
		t.Errorf("median even = %v, want the lower middle", got)
	}
}

func TestLatenciesSnapshotSorted(t *testing.T) {
	var l latencies
	l.add(3)
	l.add(1)
	l.add(2)
	l.fail()
	s, errs := l.snapshot()
	if errs != 1 || len(s) != 3 || s[0] != 1 || s[2] != 3 {
		t.Fatalf("snapshot = %v, %d", s, errs)
	}
}

func TestLine(t *testing.T) {
	got := line("seq_put", kv{"ops_per_s", rate(500, time.Second)}, kv{"p50_ms", ms(2100 * time.Microsecond)},
		kv{"errors", 0}, kv{"note", "two words"}, kv{"trials_ms", msList([]time.Duration{time.Millisecond, -1})})
	want := `workload=seq_put ops_per_s=500.0 p50_ms=2.10 errors=0 note="two words" trials_ms=1.00,-`
	if got != want {
		t.Errorf("line =\n%s\nwant\n%s", got, want)
	}
}

func TestLatencyFields(t *testing.T) {
	s := []time.Duration{time.Millisecond, 2 * time.Millisecond}
	got := line("x", latencyFields(s, 1, 2*time.Second)...)
	want := "workload=x ops=2 ops_per_s=1.0 p50_ms=1.00 p90_ms=2.00 p99_ms=2.00 max_ms=2.00 errors=1"
	if got != want {
		t.Errorf("got %s\nwant %s", got, want)
	}
}
