// Package ctxwait holds the one way the project's code waits for a while: a pause that
// its context cuts short (a retry's back-off, a gap between two checks). Tests never
// pause to wait for a state; they poll with a deadline (internal/testutil).
//
// Package ctxwait imports the standard library only; it must never import another
// package of this project.
package ctxwait

import (
	"context"
	"time"
)

// Pause waits for d, or until ctx ends, and then returns ctx's error. A ctx that has
// ended already returns at once, whatever d is.
func Pause(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
