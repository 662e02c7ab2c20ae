package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/api"
	apiclient "github.com/pmgcm/pmgcm/api/client"
	"github.com/pmgcm/pmgcm/backup"
)

// badMail is one message of a crafted backup.
type badMail struct {
	meta string
	body []byte
}

// craftBackup writes a backup file whose checksum is valid whatever its content (the
// backup Writer checks nothing): a file altered by someone who recomputed the checksum,
// or written by another tool.
func craftBackup(t *testing.T, path string, entries []backup.Entry, mail []badMail) string {
	t.Helper()
	var buf bytes.Buffer
	w, err := backup.NewWriter(&buf, backup.Header{ClusterID: "crafted", Index: 99, Created: time.Now().UTC(),
		Entries: len(entries), WithMail: len(mail) > 0, Mail: len(mail)})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if err := w.WriteEntry(e); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range mail {
		if err := w.WriteMail(json.RawMessage(m.meta), int64(len(m.body)), bytes.NewReader(m.body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// metaOf is the metadata the daemon writes for body, with sha256 given.
func metaOf(id, subject string, body []byte, sum string) string {
	b, _ := json.Marshal(api.QuarantineMessage{ID: id, OriginCID: 1, From: mailFrom, To: []string{"user@" + mailDomain},
		Subject: subject, Size: int64(len(body)), SHA256: sum, State: api.MailQuarantined, Received: time.Now().UTC()})
	return string(b)
}

// nodeState is what a restore may change: the configuration and the quarantine.
type nodeState struct {
	Config []api.ConfigEntry
	Mail   []api.QuarantineMessage
}

func stateOf(t *testing.T, n *Node) nodeState {
	t.Helper()
	mail, err := quarantine(n, "")
	if err != nil {
		t.Fatal(err)
	}
	return nodeState{Config: configList(t, n), Mail: mail}
}

// TestRestoreInvalidChangesNothing: backups whose checksum is valid but whose content is
// not — (a) an invalid key after 5 MiB of entries, (b) a message whose SHA-256 does not
// match its body, (c) message metadata of the wrong type — are refused by restore (exit
// 1, saying what is wrong and that nothing was changed) and by backup --inspect, both by
// the CLI and by the daemon itself (the file sent past the CLI's check), and the node's
// configuration and quarantine stay exactly as they were. A good backup still restores.
func TestRestoreInvalidChangesNothing(t *testing.T) {
	t.Parallel()
	mc := newMailCluster(t, 1, false)
	n := mc.Nodes[0]
	n.Start()
	setConfig(t, mc.Nodes, keyRelayDomains, mailDomain)
	n.CLI("config", "set", "local/keep", "me")
	for i := 0; i < 3; i++ {
		mustSend(t, mc.addr(n), mailMsg(fmt.Sprintf("local-%d", i), 1500+i*500))
	}
	released := idOf(t, n, "local-1", 10*time.Second)
	idOf(t, n, "local-2", 10*time.Second)
	n.CLI("quarantine", "release", released)
	before := stateOf(t, n)
	if len(before.Mail) != 3 || len(before.Config) != 2 {
		t.Fatalf("before: %+v", before)
	}

	dir := t.TempDir()
	body := mailMsg("restored", 3000)
	good := badMail{metaOf("1-1", "restored", body, sha(body)), body}
	var big []backup.Entry
	for i := 0; i < 5; i++ {
		big = append(big, backup.Entry{Key: fmt.Sprintf("big/%d", i), Value: bytes.Repeat([]byte{'v'}, 1<<20), Version: 1})
	}
	other := mailMsg("other", 3000)
	files := []struct {
		name, path, want string
	}{
		{"invalid key after 5 MiB", craftBackup(t, filepath.Join(dir, "a"),
			append(big, backup.Entry{Key: "bad key", Value: []byte("x")}), []badMail{good}), `invalid key: "bad key"`},
		{"sha256 does not match the body", craftBackup(t, filepath.Join(dir, "b"),
			[]backup.Entry{{Key: "restored/key", Value: []byte("x")}}, []badMail{good, {metaOf("1-2", "bad", body, sha(other)), body}}), "SHA-256"},
		{"metadata of the wrong type", craftBackup(t, filepath.Join(dir, "c"),
			[]backup.Entry{{Key: "restored/key", Value: []byte("x")}}, []badMail{good, {`{"id":"1-2","to":"user@example.com"}`, body}}), "metadata"},
	}
	client := apiclient.New(n.Socket)
	for _, f := range files {
		_, errOut, err := n.run("restore", f.path)
		if err == nil || !strings.Contains(err.Error(), "exit 1:") {
			t.Fatalf("%s: restore: %v, want exit 1", f.name, err)
		}
		if !strings.Contains(errOut, f.want) || !strings.Contains(errOut, "nothing was changed") {
			t.Errorf("%s: restore said %q, want %q and that nothing was changed", f.name, errOut, f.want)
		}
		// The daemon checks the file itself: send it past the CLI's check.
		raw, err := os.ReadFile(f.path)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, err = client.Restore(ctx, bytes.NewReader(raw))
		cancel()
		if err == nil || !strings.Contains(err.Error(), f.want) || !strings.Contains(err.Error(), "nothing was changed") {
			t.Errorf("%s: the daemon's restore said %v, want %q and that nothing was changed", f.name, err, f.want)
		}
		out, errOut, err := n.run("backup", "--inspect", f.path)
		if err == nil || !strings.Contains(err.Error(), "exit 1:") || !strings.Contains(errOut, f.want) ||
			!strings.Contains(out, "content:    INVALID") || strings.Contains(out, "ok") {
			t.Errorf("%s: inspect: %v\nstdout:\n%s\nstderr:\n%s", f.name, err, out, errOut)
		}
		if after := stateOf(t, n); !reflect.DeepEqual(after, before) {
			t.Fatalf("%s: a refused restore changed the node:\nbefore %+v\nafter  %+v", f.name, before, after)
		}
		if _, err := os.Stat(filepath.Join(n.DataDir, "mail.restore")); !os.IsNotExist(err) {
			t.Fatalf("%s: the staging store was left behind: %v", f.name, err)
		}
	}

	// A good backup of this node restores, through the staging store, whole.
	file := filepath.Join(dir, "good")
	n.CLI("backup", file, "--with-mail")
	n.CLI("config", "set", "local/after", "1")
	mustSend(t, mc.addr(n), mailMsg("after-backup", 500))
	idOf(t, n, "after-backup", 10*time.Second)
	if out := n.CLI("restore", file); !strings.Contains(out, "restored 2 entries and 3 messages") {
		t.Fatalf("restore said %q", out)
	}
	after := stateOf(t, n)
	if !reflect.DeepEqual(keysOf(after.Config), keysOf(before.Config)) {
		t.Fatalf("configuration after restore: %v, want %v", keysOf(after.Config), keysOf(before.Config))
	}
	got, want := map[string]string{}, map[string]string{}
	for _, m := range after.Mail {
		got[m.Subject] = m.State + " " + m.SHA256
	}
	for _, m := range before.Mail {
		want[m.Subject] = m.State + " " + m.SHA256
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("quarantine after restore: %v, want %v", got, want)
	}
}

func keysOf(list []api.ConfigEntry) []string {
	var out []string
	for _, e := range list {
		v := e.ValueBase64
		if e.Value != nil {
			v = *e.Value
		}
		out = append(out, e.Key+"="+v)
	}
	return out
}
