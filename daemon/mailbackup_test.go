package daemon

import (
	"errors"
	"testing"
	"time"

	"github.com/pmgcm/pmgcm/mailstore"
)

// TestBackupRefusesMissingBody: a node that knows of a message but has not received its
// body yet cannot take a mail backup; it says it is still syncing.
func TestBackupRefusesMissingBody(t *testing.T) {
	store, err := mailstore.Open(t.TempDir(), mailstore.Options{LocalCID: func() uint64 { return 1 }})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	meta := &mailstore.Meta{ID: mailstore.MakeID(2, 1), Origin: 2, Seq: 1, From: "a@x.test", To: []string{"b@example.com"},
		Size: 10, SHA256: "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
		State: mailstore.StateQuarantined, Received: time.Unix(1e9, 0).UTC()}
	if _, err := store.ApplyEvent(mailstore.Event{Origin: 2, Seq: 1, Kind: mailstore.KindNew, MsgID: meta.ID, Msg: meta, At: meta.Received}); err != nil {
		t.Fatal(err)
	}
	d := &backups{mail: func() *mailSystem { return &mailSystem{store: store} }}
	if _, err := d.backupMail(true); !errors.Is(err, ErrSyncing) {
		t.Fatalf("backupMail = %v, want ErrSyncing", err)
	}
	if mb, err := d.backupMail(false); err != nil || mb.count() != 0 {
		t.Fatalf("a backup without mail must not look at the store: %v", err)
	}
}
