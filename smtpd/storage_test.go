package smtpd

import (
	"strings"
	"sync/atomic"
	"testing"
)

// TestLowStorage: while LowStorage says so, MAIL gets 452 4.3.1 and nothing is stored;
// once it clears, mail is taken again on the next transaction.
func TestLowStorage(t *testing.T) {
	var low atomic.Bool
	low.Store(true)
	ts := startServer(t, func(c *Config) { c.LowStorage = low.Load })
	err := send(ts.addr, "a@example.net", []string{"bob@example.com"}, testMessage)
	if smtpCode(err) != 452 || !strings.Contains(err.Error(), "4.3.1") || !strings.Contains(err.Error(), "Insufficient system storage") {
		t.Fatalf("send while low on disk: %v, want 452 4.3.1 Insufficient system storage", err)
	}
	if !ts.Listening() {
		t.Fatal("Listening is false on an open server")
	}
	low.Store(false)
	if err := send(ts.addr, "a@example.net", []string{"bob@example.com"}, testMessage); err != nil {
		t.Fatalf("send after the disk cleared: %v", err)
	}
	ts.wantOutcomes(t, map[Outcome]int{RefusedStorage: 1, Accepted: 1})
}
