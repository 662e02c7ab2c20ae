package daemon

import (
	"bytes"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// TestJoinThrottle: five wrong tokens are free, then each one refuses the source for
// twice as long as the one before; another source is not affected; a right token or an
// hour without a wrong one clears the count; 200 wrong tries make two log lines.
func TestJoinThrottle(t *testing.T) {
	var logBuf bytes.Buffer
	th := newJoinThrottle(hclog.New(&hclog.LoggerOptions{Output: &logBuf, Level: hclog.Warn}))
	now := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	th.now = func() time.Time { return now }
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")

	for i := 0; i < joinFreeFailures-1; i++ {
		if err := th.check(a); err != nil {
			t.Fatalf("try %d refused: %v", i, err)
		}
		th.failed(a)
	}
	if err := th.check(a); err != nil {
		t.Fatalf("the 5th try refused: %v", err)
	}
	th.failed(a) // the 5th wrong token: 1 s
	if err := th.check(a); !errors.Is(err, ErrThrottled) {
		t.Fatalf("after %d wrong tokens: %v, want ErrThrottled", joinFreeFailures, err)
	}
	if err := th.check(b); err != nil {
		t.Fatalf("another source refused: %v", err)
	}
	now = now.Add(time.Second)
	if err := th.check(a); err != nil {
		t.Fatalf("after the back-off: %v", err)
	}
	th.failed(a) // 2 s
	now = now.Add(1500 * time.Millisecond)
	if err := th.check(a); !errors.Is(err, ErrThrottled) {
		t.Fatalf("the back-off did not grow: %v", err)
	}
	now = now.Add(time.Second)
	th.succeeded(a)
	th.failed(a)
	if err := th.check(a); err != nil {
		t.Fatalf("a right token did not clear the count: %v", err)
	}

	// Bounded: the back-off stops growing.
	for i := 0; i < 100; i++ {
		th.failed(b)
	}
	if got := th.sources[b].until.Sub(now); got != joinBackoffMax {
		t.Errorf("back-off after 100 wrong tokens %s, want %s", got, joinBackoffMax)
	}
	now = now.Add(joinBackoffMax + joinFailureMemory + time.Second)
	th.failed(b)
	if n := th.sources[b].n; n != 1 {
		t.Errorf("after an hour without wrong tokens the count is %d, want 1", n)
	}

	th.close()
	lines := strings.Count(strings.TrimSpace(logBuf.String()), "\n") + 1
	if lines != 2 || !strings.Contains(logBuf.String(), "join requests refused") {
		t.Errorf("%d log lines for %d refusals, want 2 (the first, one summary):\n%s", lines, 110, logBuf.String())
	}
}

// TestJoinThrottleBounded: the table of sources stays at maxJoinSources.
func TestJoinThrottleBounded(t *testing.T) {
	th := newJoinThrottle(hclog.NewNullLogger())
	defer th.close()
	base := netip.MustParseAddr("10.0.0.0").As4()
	for i := 0; i < maxJoinSources+100; i++ {
		a := base
		a[2], a[3] = byte(i>>8), byte(i)
		th.failed(netip.AddrFrom4(a))
	}
	if n := len(th.sources); n > maxJoinSources {
		t.Errorf("%d sources remembered, the bound is %d", n, maxJoinSources)
	}
}

// TestThrottleKey: IPv4 addresses count alone, IPv6 ones by their /64.
func TestThrottleKey(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.1":            "192.0.2.1",
		"::ffff:192.0.2.1":     "192.0.2.1",
		"2001:db8:1:2:3:4:5:6": "2001:db8:1:2::",
		"2001:db8:1:2:ffff::1": "2001:db8:1:2::",
		"2001:db8:1:3::1":      "2001:db8:1:3::",
	} {
		if got := throttleKey(netip.MustParseAddr(in)); got.String() != want {
			t.Errorf("throttleKey(%s) = %s, want %s", in, got, want)
		}
	}
}
