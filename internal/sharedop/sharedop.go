// Package sharedop holds what an operation that several callers share (one batch of
// forwarded writes, one read-index round) needs to end in time for all of them: when it
// must end, given the callers' deadlines.
//
// Package sharedop imports the standard library only; it must never import another
// package of this project.
package sharedop

import "time"

// Earliest returns the earlier of two caller deadlines, where the zero time is no
// deadline: Earliest(zero, t) is t.
func Earliest(a, b time.Time) time.Time {
	switch {
	case a.IsZero():
		return b
	case b.IsZero() || a.Before(b):
		return a
	}
	return b
}

// Deadline returns when a shared operation started at now must end: timeout after now, or
// margin before earliest (the earliest of its callers' deadlines; zero: none has one), if
// that is sooner. An operation that ran until its earliest caller gave up could only
// answer that caller "timed out"; ended margin before, it answers what it found (no
// quorum, say), which tells the caller what to do next.
func Deadline(now time.Time, timeout time.Duration, earliest time.Time, margin time.Duration) time.Time {
	end := now.Add(timeout)
	if !earliest.IsZero() && earliest.Add(-margin).Before(end) {
		end = earliest.Add(-margin)
	}
	return end
}
