package daemon

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/backup"
	"github.com/pmgcm/pmgcm/mailstore"
)

// mailBackup is the quarantine part of a backup: the messages that are not deleted, with
// their bodies streamed from this node's store.
type mailBackup struct {
	store *mailstore.Store
	list  []mailstore.Meta
}

// backupMail lists the messages to back up; none unless withMail.
func (bk *backups) backupMail(withMail bool) (*mailBackup, error) {
	mb := &mailBackup{store: bk.mail().store}
	if !withMail {
		return mb, nil
	}
	list, err := bk.mail().store.List(mailstore.Filter{})
	if err != nil {
		return nil, err
	}
	for _, m := range list {
		if !m.HaveBody {
			return nil, fmt.Errorf("%w: message %s has not reached it yet: take the backup on a node in state A, or wait",
				ErrSyncing, m.ID)
		}
	}
	mb.list = list
	return mb, nil
}

func (m *mailBackup) count() int { return len(m.list) }

func (m *mailBackup) write(w *backup.Writer) error {
	for _, meta := range m.list {
		if err := m.writeOne(w, meta); err != nil {
			return err
		}
	}
	return nil
}

func (m *mailBackup) writeOne(w *backup.Writer, meta mailstore.Meta) error {
	f, cur, err := m.store.OpenBody(meta.ID)
	if err != nil {
		return fmt.Errorf("message %s: %w", meta.ID, err)
	}
	defer f.Close()
	b, err := json.Marshal(quarantineMessage(cur))
	if err != nil {
		return err
	}
	return w.WriteMail(b, cur.Size, f)
}

// importMail loads a backed-up message into the staging store of a restore. It gets this
// node's origin and a new ID (CIDs of the old cluster will be handed out again); its
// state and the time it was first received are kept. The backup Reader has checked the
// metadata, and checks the body against its SHA-256 when the next record is read; the
// import checks it too.
func importMail(stage *mailstore.Staging, meta *api.QuarantineMessage, body io.Reader) error {
	if stage == nil || meta == nil {
		return fmt.Errorf("%w: a message in a backup whose header says it holds no mail", backup.ErrInvalid)
	}
	got, err := stage.Import(meta.From, meta.To, meta.Received, body)
	if err != nil {
		return fmt.Errorf("message %s: %w", meta.ID, err)
	}
	if meta.SHA256 != "" && got.SHA256 != meta.SHA256 {
		return fmt.Errorf("%w: message %s: its body's SHA-256 is %s, the backup says %s", backup.ErrInvalid, meta.ID, got.SHA256, meta.SHA256)
	}
	if meta.State == api.MailReleased {
		if _, err := stage.SetState(got.ID, api.MailReleased); err != nil {
			return err
		}
	}
	return nil
}

// commitMail swaps the staged quarantine of a restore in for the node's; replication
// starts over, as after a wipe.
func (bk *backups) commitMail(stage *mailstore.Staging) error {
	if r := bk.mail().replicator(); r != nil {
		_ = r.Close()
	}
	err := stage.Commit()
	if serr := bk.mail().startReplicator(); err == nil {
		err = serr
	}
	return err
}
