package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/backup"
	"github.com/pmgcm/pmgcm/internal/testutil"
)

// oldMailBackup writes a backup holding the relay domains, a 30-day retention and n
// messages received 40 days ago, and returns its path.
func oldMailBackup(t *testing.T, n int) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "old-mail.backup")
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w, err := backup.NewWriter(f, backup.Header{ClusterID: "old-cluster", Index: 10, Created: time.Now().UTC(),
		Entries: 2, WithMail: true, Mail: n})
	if err != nil {
		t.Fatal(err)
	}
	for i, kv := range [][2]string{{keyRelayDomains, mailDomain}, {keyRetentionDays, "30"}} {
		if err := w.WriteEntry(backup.Entry{Key: kv[0], Value: []byte(kv[1]), Version: uint64(i + 1)}); err != nil {
			t.Fatal(err)
		}
	}
	received := time.Now().Add(-40 * 24 * time.Hour).UTC()
	for i := 0; i < n; i++ {
		body := mailMsg(fmt.Sprintf("old-%d", i), 400)
		meta, _ := json.Marshal(api.QuarantineMessage{ID: fmt.Sprintf("3-%d", i+1), OriginCID: 3, From: mailFrom,
			To: []string{"user@" + mailDomain}, Size: int64(len(body)), SHA256: sha(body), State: api.MailQuarantined,
			Received: received})
		if err := w.WriteMail(meta, int64(len(body)), bytes.NewReader(body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return file
}

// TestMailRetentionCompactsAndLateJoin: messages past retention are purged and their
// events compacted on the master; a node that joins afterwards skips the compacted
// events and receives every live message, and none of the purged ones.
func TestMailRetentionCompactsAndLateJoin(t *testing.T) {
	t.Parallel()
	mc := newMailCluster(t, 2, false)
	n1, n2 := mc.Nodes[0], mc.Nodes[1]
	n1.Start()
	n2.Start()
	// Restored messages keep their received time: 40 days old, past the 30-day retention.
	if out := n1.CLI("restore", oldMailBackup(t, 6)); !strings.Contains(out, "restored 2 entries and 6 messages") {
		t.Fatalf("restore printed %q", out)
	}
	n1.CLI("create")
	n1.WaitMaster(15 * time.Second)
	live := map[string]string{}
	for i := 0; i < 3; i++ {
		msg := mailMsg(fmt.Sprintf("live-%d", i), 900)
		mustSend(t, mc.addr(n1), msg)
		live[fmt.Sprintf("live-%d", i)] = sha(msg)
	}
	// A restart applies retention at once (the daemon also does every 10 minutes).
	n1.Stop()
	n1.Start()
	n1.WaitMaster(15 * time.Second)
	testutil.Poll(t, "the old messages purged and their events compacted on "+n1.Name, 15*time.Second, func() error {
		if !strings.Contains(n1.Log(), "mail event log compacted") {
			return fmt.Errorf("no compaction logged yet")
		}
		return nil
	})
	if list, err := quarantine(n1, ""); err != nil || len(list) != len(live) {
		t.Fatalf("%s lists %d messages (%v), want the %d live ones", n1.Name, len(list), err, len(live))
	}

	n2.CLI(append(joinArgs(t, n1), "--yes")...)
	mc.waitAllActive(mc.Nodes, 30*time.Second)
	waitMail(t, mc.Nodes, live, 30*time.Second)
	list, err := quarantine(n2, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range list {
		if _, ok := live[m.Subject]; !ok {
			t.Errorf("%s got %q (%s), a message past retention", n2.Name, m.Subject, m.ID)
		}
	}
	if !strings.Contains(n2.Log(), "skipped events compacted on the peer") {
		t.Errorf("%s did not skip the compacted events:\n%s", n2.Name, tail([]byte(n2.Log()), 40))
	}
}
