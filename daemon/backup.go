package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/backup"
	"github.com/pmgcm/pmgcm/fsm"
	"github.com/pmgcm/pmgcm/mailstore"
)

// restoreChunk bounds the entries of one RestoreConfig command (one Raft entry).
const restoreChunk = 4 << 20

// handleBackup streams a backup: every configuration entry at one Raft index (after a
// linearizable read in a cluster), and with mail=1 the quarantine.
func (bk *backups) handleBackup(w http.ResponseWriter, r *http.Request) {
	if err := bk.host.checkServing(); err != nil {
		writeErr(w, err)
		return
	}
	if bk.trust.knownCluster() != "" {
		if err := bk.writes.linearizableRead(r.Context()); err != nil {
			writeErr(w, err)
			return
		}
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	h, err := bk.writeBackup(r.URL.Query().Get("mail") == "1", func(estimate int64) io.Writer {
		w.Header().Set(api.HeaderSizeEstimate, strconv.FormatInt(estimate, 10))
		w.WriteHeader(http.StatusOK)
		return w
	})
	if err != nil && h == nil {
		writeErr(w, err)
		return
	}
	if err != nil {
		// The answer has begun: cut the connection so the client sees an incomplete file,
		// which never verifies.
		bk.logger.Error("backup failed", "error", err)
		panic(http.ErrAbortHandler)
	}
	bk.logger.Info("backup written", "index", h.Index, "entries", h.Entries, "mail", h.Mail)
}

// writeBackup writes a backup of the configuration at one index (and, withMail, the
// quarantine) to the writer open returns, called once the backup can begin with an
// estimate of its size. A nil header means nothing was written.
func (bk *backups) writeBackup(withMail bool, open func(estimate int64) io.Writer) (*backup.Header, error) {
	mail, err := bk.backupMail(withMail)
	if err != nil {
		return nil, err
	}
	idx, entries := bk.fsm.EntriesAt()
	defer entries.Close()
	h := backup.Header{ClusterID: bk.trust.knownCluster(), Index: idx, Created: time.Now().UTC(),
		Entries: entries.Len(), WithMail: withMail, Mail: mail.count()}
	bw, err := backup.NewWriter(open(backupEstimate(entries, mail.list)), h)
	for i := 0; i < entries.Len() && err == nil; i++ {
		var e fsm.Entry
		if e, err = entries.At(i); err == nil {
			err = bw.WriteEntry(backup.Entry{Key: e.Key, Value: e.Value, Version: e.Version})
		}
	}
	if err == nil {
		err = mail.write(bw)
	}
	if err == nil {
		err = bw.Close()
	}
	return &h, err
}

// handleRestore loads a backup into this node, which must be in no cluster. The file is
// spooled and verified whole (checksum and content), and its mail imported into a
// staging store, before anything changes: a refused restore changes nothing.
func (bk *backups) handleRestore(w http.ResponseWriter, r *http.Request) {
	res, err := bk.restore(r.Context(), r.Body)
	reply(w, res, err)
}

// restore reads the backup twice. Pass 1 spools it while checking it whole (the backup
// Reader checks every key, value, message metadata and body SHA-256) and imports its
// mail into a staging store; any error aborts the staging, and nothing was changed.
// Pass 2 loads the configuration from the spool; then the staged mail replaces the
// quarantine in one step.
func (bk *backups) restore(ctx context.Context, body io.Reader) (*api.RestoreResponse, error) {
	leave, err := bk.gate.enter("pmgcm restore")
	if err != nil {
		return nil, err
	}
	defer leave()
	if id := bk.trust.knownCluster(); id != "" {
		return nil, fmt.Errorf("%w: this node is cid %d of cluster %s: a backup is restored on a node in no cluster (the manual's total cluster failure: restore on a fresh node, then pmgcm create, then join the other nodes); nothing was changed",
			ErrClusterExists, bk.host.self().CID, id)
	}
	spool, err := os.CreateTemp(bk.dir.path, "restore-*.tmp")
	if err != nil {
		return nil, err
	}
	defer os.Remove(spool.Name())
	defer spool.Close()
	h, stage, mailCount, err := bk.restoreCheck(io.TeeReader(body, spool))
	if err != nil {
		if badBackup(err) {
			return nil, fmt.Errorf("%w: %w; nothing was changed", fsm.ErrBadCommand, err)
		}
		return nil, fmt.Errorf("restore: %w; nothing was changed", err)
	}
	if stage != nil {
		defer func() { _ = stage.Abort() }() // a no-op once committed
	}
	out := &api.RestoreResponse{ClusterID: h.ClusterID, Index: h.Index, Mail: mailCount}
	if out.Entries, err = bk.restoreConfig(ctx, spool); err != nil {
		// The file was checked whole: only a failure of the node itself (its Raft log,
		// its disk) stops the load half-way.
		return nil, fmt.Errorf("%w; the quarantine was not changed, the configuration may be partly restored: fix the cause and run pmgcm restore again", err)
	}
	if stage != nil {
		if err := bk.commitMail(stage); err != nil {
			return nil, fmt.Errorf("the configuration was restored, the quarantine was not: %w: run pmgcm restore again", err)
		}
	}
	bk.logger.Info("backup restored", "from-cluster", h.ClusterID, "index", h.Index, "entries", out.Entries, "mail", out.Mail)
	return out, nil
}

// badBackup reports whether err is about the backup file (refused: the caller's
// mistake), not about this node.
func badBackup(err error) bool {
	for _, e := range []error{backup.ErrNotBackup, backup.ErrNewer, backup.ErrCorrupt, backup.ErrTruncated, backup.ErrInvalid} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// restoreCheck is pass 1 of restore: it reads the whole backup from r, checking it, and
// imports its mail (if any) into a staging store, which it returns. On error the
// staging is gone and the node is as it was.
func (bk *backups) restoreCheck(r io.Reader) (h backup.Header, stage *mailstore.Staging, mail int, err error) {
	br, err := backup.NewReader(r)
	if err != nil {
		return h, nil, 0, err
	}
	h = br.Header()
	if h.WithMail {
		if stage, err = bk.mail().store.BeginRestore(); err != nil {
			return h, nil, 0, err
		}
		defer func() {
			if err != nil {
				_ = stage.Abort()
				stage = nil
			}
		}()
	}
	for {
		rec, err := br.Next()
		if errors.Is(err, io.EOF) {
			return h, stage, mail, nil
		}
		if err != nil {
			return h, stage, 0, err
		}
		if rec.Mail != nil {
			if err := importMail(stage, rec.Message, rec.Body); err != nil {
				return h, stage, 0, err
			}
			mail++
		}
	}
}

// restoreConfig is pass 2 of restore: it loads the configuration entries of the spooled
// (and checked) backup, replacing the node's, in commands of at most restoreChunk bytes.
func (bk *backups) restoreConfig(ctx context.Context, spool *os.File) (int, error) {
	if _, err := spool.Seek(0, io.SeekStart); err != nil {
		return 0, err
	}
	br, err := backup.NewReader(spool)
	if err != nil {
		return 0, err
	}
	chunk := &fsm.RestoreConfig{Reset: true}
	size, n := 0, 0
	flush := func() error {
		if _, err := bk.writes.propose(ctx, chunk); err != nil {
			return fmt.Errorf("load configuration: %w", err)
		}
		chunk, size = &fsm.RestoreConfig{}, 0
		return nil
	}
	for {
		rec, err := br.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return n, err
		}
		if rec.Entry == nil {
			continue
		}
		if size+len(rec.Entry.Key)+len(rec.Entry.Value) > restoreChunk {
			if err := flush(); err != nil {
				return n, err
			}
		}
		chunk.Entries = append(chunk.Entries, fsm.RestoredEntry{Key: rec.Entry.Key, Value: rec.Entry.Value})
		size += len(rec.Entry.Key) + len(rec.Entry.Value)
		n++
	}
	if chunk.Reset || len(chunk.Entries) > 0 {
		if err := flush(); err != nil {
			return n, err
		}
	}
	return n, nil
}
