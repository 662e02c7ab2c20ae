package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/api"
	apiclient "github.com/pmgcm/pmgcm/api/client"
	"github.com/pmgcm/pmgcm/backup"
	"github.com/pmgcm/pmgcm/internal/testutil"
)

// readBackup returns the header and entries of a backup file, failing on any error.
func readBackup(t *testing.T, path string) (backup.Header, map[string]backup.Entry) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := backup.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	entries := map[string]backup.Entry{}
	for {
		rec, err := r.Next()
		if errors.Is(err, io.EOF) {
			return r.Header(), entries
		}
		if err != nil {
			t.Fatal(err)
		}
		if rec.Entry != nil {
			entries[rec.Entry.Key] = *rec.Entry
		}
	}
}

// TestTotalClusterFailure is the manual's total cluster failure: back up a 3-node
// cluster with configuration and mail, lose every node and its disk, restore on a fresh
// node, create, join two fresh nodes: the configuration is back byte-exact and every
// message with its checksum and state, under a new cluster ID.
func TestTotalClusterFailure(t *testing.T) {
	t.Parallel()
	mc := newMailCluster(t, 3, false)
	c := mc.Cluster
	c.form()
	setConfig(t, c.Nodes, keyRelayDomains, "example.com\nexample.org\n")
	want := map[string][]byte{
		keyRelayDomains:        []byte("example.com\nexample.org\n"),
		"etc/postfix/main.cf":  bytes.Repeat([]byte("relayhost = [mx.example.com]\n"), 100),
		"spam/blob":            {0, 1, 2, 0xfe, 0xff, '\n', 0},
		"deep/a/b/c/d/e/f/key": []byte(""),
	}
	for k, v := range want {
		if _, _, err := c.Nodes[0].runInput(v, "config", "set", k, "--file", "-"); err != nil {
			t.Fatal(err)
		}
	}
	mails := map[string]string{}
	for i := 0; i < 12; i++ {
		n := c.Nodes[i%3]
		msg := mailMsg(fmt.Sprintf("backed-up-%02d", i), 500+i*700)
		mustSend(t, mc.addr(n), msg)
		mails[fmt.Sprintf("backed-up-%02d", i)] = sha(msg)
	}
	waitMail(t, c.Nodes, mails, 30*time.Second)
	released := idOf(t, c.Nodes[0], "backed-up-05", 10*time.Second)
	c.Nodes[0].CLI("quarantine", "release", released)
	testutil.Poll(t, "the release reaches the backup node", 20*time.Second, func() error {
		return hasState(c.Nodes[2], "backed-up-05", api.MailReleased)
	})
	old, err := c.Nodes[0].Status()
	if err != nil {
		t.Fatal(err)
	}
	before, err := quarantine(c.Nodes[2], "")
	if err != nil {
		t.Fatal(err)
	}
	received := map[string]time.Time{} // subject -> received
	for _, m := range before {
		received[m.Subject] = m.Received
	}
	file := filepath.Join(t.TempDir(), "cluster.backup")
	c.Nodes[2].CLI("backup", file, "--with-mail")
	inspect := c.Nodes[2].CLI("backup", "--inspect", file)
	if !strings.Contains(inspect, old.Cluster.ID) || !strings.Contains(inspect, "checksum:   ok") ||
		!strings.Contains(inspect, "entries:    4") || !strings.Contains(inspect, "mail:       12 messages") {
		t.Fatalf("backup --inspect printed:\n%s", inspect)
	}

	for _, n := range c.Nodes {
		n.Kill()
		if err := os.RemoveAll(n.DataDir); err != nil {
			t.Fatal(err)
		}
	}
	fresh := newCluster(t, 3)
	for _, n := range fresh.Nodes {
		n.Start()
	}
	out := fresh.Nodes[0].CLI("restore", file)
	if !strings.Contains(out, "restored 4 entries and 12 messages") {
		t.Fatalf("restore printed %q", out)
	}
	fresh.Nodes[0].CLI("create")
	fresh.Nodes[0].WaitMaster(15 * time.Second)
	args := append(joinArgs(t, fresh.Nodes[0]), "--yes")
	for _, n := range fresh.Nodes[1:] {
		n.CLI(args...)
	}
	fresh.waitAllActive(fresh.Nodes, 30*time.Second)
	st, err := fresh.Nodes[2].Status()
	if err != nil {
		t.Fatal(err)
	}
	if st.Cluster.ID == old.Cluster.ID {
		t.Fatalf("the restored cluster kept the old cluster ID %s", old.Cluster.ID)
	}
	for _, n := range fresh.Nodes {
		for k, v := range want {
			if got := n.CLI("config", "get", k); !bytes.Equal([]byte(got), v) {
				t.Fatalf("%s: %s = %q after restore, want %q", n.Name, k, got, v)
			}
		}
	}
	waitMail(t, fresh.Nodes, mails, 30*time.Second)
	for _, n := range fresh.Nodes {
		if err := hasState(n, "backed-up-05", api.MailReleased); err != nil {
			t.Fatal(err)
		}
		// Each message keeps the time it was first received (retention counts from it).
		list, err := quarantine(n, "")
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range list {
			if want, ok := received[m.Subject]; !ok || !m.Received.Equal(want) {
				t.Errorf("%s: %s received %v after restore, %v before", n.Name, m.Subject, m.Received, want)
			}
		}
	}
}

// hasState checks that node n lists the message with subject in state.
func hasState(n *Node, subject, state string) error {
	list, err := quarantine(n, "")
	if err != nil {
		return err
	}
	for _, m := range list {
		if m.Subject == subject {
			if m.State != state {
				return fmt.Errorf("%s: %q is %s, want %s", n.Name, subject, m.State, state)
			}
			return nil
		}
	}
	return fmt.Errorf("%s: no message %q", n.Name, subject)
}

// TestBackupConsistentUnderWrites: a backup taken while a writer runs holds the writes
// up to one point and none after it, every entry at or below the header's index.
func TestBackupConsistentUnderWrites(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3)
	c.form()
	m := c.master()
	client := apiclient.New(m.Socket)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ctx.Err() == nil; i++ {
			cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
			_, err := client.ConfigSet(cctx, fmt.Sprintf("seq/%06d", i), []byte(fmt.Sprint(i)), apiclient.WriteOptions{})
			ccancel()
			if err != nil && ctx.Err() == nil {
				t.Errorf("write %d: %v", i, err)
				return
			}
		}
	}()
	testutil.Poll(t, "writes under way", 20*time.Second, func() error {
		if n := len(configList(t, m)); n < 30 {
			return fmt.Errorf("%d entries", n)
		}
		return nil
	})
	file := filepath.Join(t.TempDir(), "b")
	c.Nodes[1].CLI("backup", file)
	cancel()
	wg.Wait()
	h, entries := readBackup(t, file)
	n := 0
	for ; ; n++ {
		e, ok := entries[fmt.Sprintf("seq/%06d", n)]
		if !ok {
			break
		}
		if e.Version > h.Index {
			t.Fatalf("entry %s at version %d, above the backup's index %d", e.Key, e.Version, h.Index)
		}
	}
	if n != len(entries) || n < 30 {
		t.Fatalf("backup holds %d entries but only seq/0..%d without a gap: not one point in time", len(entries), n)
	}
	t.Logf("backup at index %d holds writes 0..%d", h.Index, n-1)
}

// TestRestoreRefusals: a restore on a cluster member, and of a truncated, corrupt or
// newer-format file, is refused and changes nothing.
func TestRestoreRefusals(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 2)
	member, standalone := c.Nodes[0], c.Nodes[1]
	member.Start()
	standalone.Start()
	member.CLI("create")
	member.WaitMaster(15 * time.Second)
	member.CLI("config", "set", "in/backup", "1")
	dir := t.TempDir()
	good := filepath.Join(dir, "good")
	member.CLI("backup", good)
	b, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	corrupt := bytes.Clone(b)
	corrupt[len(corrupt)/2] ^= 0x20
	files := map[string]string{
		"truncated":    write("truncated", b[:len(b)-10]),
		"corrupt":      write("corrupt", corrupt),
		"newer":        write("newer", bytes.Replace(b, []byte(`"format":1`), []byte(`"format":9`), 1)),
		"not a backup": write("other", []byte("hello\n")),
	}
	standalone.CLI("config", "set", "local/keep", "me")
	for name, f := range files {
		errOut := standalone.CLIFail("restore", f)
		if !strings.Contains(errOut, "nothing was changed") {
			t.Errorf("%s: restore said %q", name, errOut)
		}
	}
	if errOut := standalone.CLIFail("backup", "--inspect", files["corrupt"]); !strings.Contains(errOut, "corrupt") {
		t.Errorf("inspect of a corrupt file said %q", errOut)
	}
	if errOut := member.CLIFail("restore", good); !strings.Contains(errOut, "no cluster") {
		t.Errorf("restore on a member said %q", errOut)
	}
	if got := standalone.CLI("config", "get", "local/keep"); got != "me" {
		t.Fatalf("a refused restore changed the standalone node: %q", got)
	}
	if errOut := standalone.CLIFail("config", "get", "in/backup"); !strings.Contains(errOut, "not found") {
		t.Fatalf("a refused restore loaded entries: %q", errOut)
	}
	if got := member.CLI("config", "get", "in/backup"); got != "1" {
		t.Fatalf("a refused restore changed the member: %q", got)
	}
}

// TestRestoreGoldenBackup: a backup file of format 1 (testdata/) restores on a fresh node,
// configuration and mail.
func TestRestoreGoldenBackup(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 1)
	n := c.Nodes[0]
	n.Start()
	out := n.CLI("restore", filepath.Join("..", "testdata", "backup-format1.backup"))
	if !strings.Contains(out, "restored 2 entries and 1 messages") {
		t.Fatalf("restore said %q", out)
	}
	if got := n.CLI("config", "get", "spam/blob"); got != "\x00\x01\xfe\xff" {
		t.Fatalf("spam/blob = %q", got)
	}
	list := n.CLI("quarantine", "list", "-o", "json")
	if !strings.Contains(list, `"kept"`) || !strings.Contains(list, `"b@example.com"`) {
		t.Fatalf("quarantine after restore: %s", list)
	}
}
