package ctxwait

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestPause: a pause lasts its duration when nothing ends it; an ending context cuts it
// short with its error, and one that ended already returns at once.
func TestPause(t *testing.T) {
	start := time.Now()
	if err := Pause(context.Background(), 20*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 20*time.Millisecond {
		t.Fatalf("a 20ms pause returned after %v", d)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	start = time.Now()
	if err := Pause(ctx, time.Hour); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a pause cut short by a deadline: %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("a pause cut short after 20ms returned after %v", d)
	}

	done, cancel2 := context.WithCancel(context.Background())
	cancel2()
	if err := Pause(done, time.Hour); !errors.Is(err, context.Canceled) {
		t.Fatalf("a pause with an ended context: %v", err)
	}
}
