package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/backup"
	"github.com/pmgcm/pmgcm/fsm"
)

// restoreChunk bounds the entries of one RestoreConfig command (one Raft entry).
const restoreChunk = 4 << 20

// handleBackup streams a backup: every configuration entry at one Raft index (after a
// linearizable read in a cluster), and with mail=1 the quarantine.
func (d *Daemon) handleBackup(w http.ResponseWriter, r *http.Request) {
	if err := d.checkServing(); err != nil {
		writeErr(w, err)
		return
	}
	if d.knownCluster() != "" {
		if err := d.linearizableRead(r.Context()); err != nil {
			writeErr(w, err)
			return
		}
	}
	withMail := r.URL.Query().Get("mail") == "1"
	mail, err := d.backupMail(withMail)
	if err != nil {
		writeErr(w, err)
		return
	}
	idx, entries := d.fsm.EntriesAt()
	h := backup.Header{ClusterID: d.knownCluster(), Index: idx, Created: time.Now().UTC(),
		Entries: len(entries), WithMail: withMail, Mail: mail.count()}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.WriteHeader(http.StatusOK)
	bw, err := backup.NewWriter(w, h)
	for _, e := range entries {
		if err != nil {
			break
		}
		err = bw.WriteEntry(backup.Entry{Key: e.Key, Value: e.Value, Version: e.Version})
	}
	if err == nil {
		err = mail.write(bw)
	}
	if err == nil {
		err = bw.Close()
	}
	if err != nil {
		// The answer has begun: cut the connection so the client sees an incomplete file,
		// which never verifies.
		d.logger.Error("backup failed", "error", err)
		panic(http.ErrAbortHandler)
	}
	d.logger.Info("backup written", "index", idx, "entries", len(entries), "mail", mail.count())
}

// handleRestore loads a backup into this node, which must be in no cluster. The file is
// spooled and verified whole before anything changes.
func (d *Daemon) handleRestore(w http.ResponseWriter, r *http.Request) {
	res, err := d.restore(r.Context(), r.Body)
	reply(w, res, err)
}

func (d *Daemon) restore(ctx context.Context, body io.Reader) (*api.RestoreResponse, error) {
	leave, err := d.gate.enter("pmgcm restore")
	if err != nil {
		return nil, err
	}
	defer leave()
	if id := d.knownCluster(); id != "" {
		return nil, fmt.Errorf("%w: this node is cid %d of cluster %s: a backup is restored on a node in no cluster (the manual's total cluster failure: restore on a fresh node, then pmgcm create, then join the other nodes); nothing was changed",
			ErrClusterExists, d.self().CID, id)
	}
	spool, err := os.CreateTemp(d.dir.path, "restore-*.tmp")
	if err != nil {
		return nil, err
	}
	defer os.Remove(spool.Name())
	defer spool.Close()
	h, err := backup.Verify(io.TeeReader(body, spool))
	if err != nil {
		return nil, fmt.Errorf("%w: %v; nothing was changed", fsm.ErrBadCommand, err)
	}
	if _, err := spool.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	br, err := backup.NewReader(spool)
	if err != nil {
		return nil, err
	}
	out := &api.RestoreResponse{ClusterID: h.ClusterID, Index: h.Index}
	chunk := &fsm.RestoreConfig{Reset: true}
	size := 0
	flush := func() error {
		if _, err := d.propose(ctx, chunk); err != nil {
			return fmt.Errorf("load configuration: %w", err)
		}
		chunk, size = &fsm.RestoreConfig{}, 0
		return nil
	}
	if h.WithMail {
		// The backup's quarantine replaces the node's.
		if err := d.wipeMail(); err != nil {
			return nil, err
		}
	}
	mail := d.mailImporter()
	for {
		rec, err := br.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		switch {
		case rec.Entry != nil:
			if size+len(rec.Entry.Key)+len(rec.Entry.Value) > restoreChunk {
				if err := flush(); err != nil {
					return nil, err
				}
			}
			chunk.Entries = append(chunk.Entries, fsm.RestoredEntry{Key: rec.Entry.Key, Value: rec.Entry.Value})
			size += len(rec.Entry.Key) + len(rec.Entry.Value)
			out.Entries++
		case rec.Mail != nil:
			if err := mail.add(rec.Mail.Meta, rec.Body); err != nil {
				return nil, fmt.Errorf("restore mail: %w", err)
			}
			out.Mail++
		}
	}
	if chunk.Reset || len(chunk.Entries) > 0 {
		if err := flush(); err != nil {
			return nil, err
		}
	}
	d.logger.Info("backup restored", "from-cluster", h.ClusterID, "index", h.Index, "entries", out.Entries, "mail", out.Mail)
	return out, nil
}
