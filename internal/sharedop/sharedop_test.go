package sharedop

import (
	"testing"
	"time"
)

func TestEarliest(t *testing.T) {
	var zero time.Time
	t1 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	t2 := t1.Add(time.Second)
	for _, tc := range []struct {
		a, b, want time.Time
	}{
		{zero, zero, zero},
		{zero, t1, t1},
		{t1, zero, t1},
		{t1, t2, t1},
		{t2, t1, t1},
		{t1, t1, t1},
	} {
		if got := Earliest(tc.a, tc.b); !got.Equal(tc.want) {
			t.Errorf("Earliest(%v, %v) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}

func TestDeadline(t *testing.T) {
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	const timeout, margin = 5 * time.Second, 100 * time.Millisecond
	for _, tc := range []struct {
		name     string
		earliest time.Time
		want     time.Time
	}{
		{"no caller has a deadline", time.Time{}, now.Add(timeout)},
		{"a caller's deadline is later than the timeout", now.Add(time.Minute), now.Add(timeout)},
		{"a caller's deadline is sooner", now.Add(time.Second), now.Add(time.Second - margin)},
		{"the margin ends exactly at the timeout", now.Add(timeout + margin), now.Add(timeout)},
		{"a caller's deadline is within the margin", now.Add(margin / 2), now.Add(-margin / 2)},
	} {
		if got := Deadline(now, timeout, tc.earliest, margin); !got.Equal(tc.want) {
			t.Errorf("%s: Deadline = %v, want %v", tc.name, got.Sub(now), tc.want.Sub(now))
		}
	}
}
