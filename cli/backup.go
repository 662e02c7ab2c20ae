package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/pmgcm/pmgcm/api"
	"github.com/pmgcm/pmgcm/backup"
)

// BackupAPI is the part of the daemon's API that backup and restore use.
type BackupAPI interface {
	Backup(ctx context.Context, withMail bool) (io.ReadCloser, error)
	Restore(ctx context.Context, r io.Reader) (*api.RestoreResponse, error)
}

func (a *app) backupCmd() *cobra.Command {
	var withMail, inspect bool
	cmd := &cobra.Command{
		Use:   "backup FILE",
		Short: "Back up the configuration (and the quarantine) to FILE",
		Long: `Write a consistent point-in-time backup of the cluster's configuration to FILE: every
configuration entry at one Raft index, with a header (format, cluster ID, index, time,
entry count) and a SHA-256 over the content. Cluster and node information (identity,
members, certificates) is never backed up: the manual's total cluster failure restores
the backup on a fresh node, then runs pmgcm create and joins new nodes.

--with-mail adds the quarantined mail, streamed. FILE "-" writes to stdout. The file is
written to a temporary name, checked and then renamed: an interrupted backup never
leaves a FILE that looks complete.

--inspect FILE prints the header of an existing backup and checks it whole, as a restore
does: its checksum, and its content (every key and value by the rules of the
configuration store, no key twice, every message's metadata and the SHA-256 of its
body). It exits 1, saying what is wrong, when a restore would refuse the file.`,
		Example: "  pmgcm backup /var/backups/pmgcm-$(date +%F).backup --with-mail\n  pmgcm backup --inspect /var/backups/pmgcm-2026-11-28.backup",
		Args:    posArgs("FILE"),
		RunE: a.runLongE(func(ctx context.Context, c API, args []string) error {
			if inspect {
				return runInspect(args[0], a.stdout)
			}
			b, ok := c.(BackupAPI)
			if !ok {
				return errors.New("this client cannot stream backups")
			}
			return runBackup(ctx, b, args[0], withMail, a.stdout, a.stderr, a.newTransfer("backup: %s received", 0))
		}),
	}
	cmd.Flags().BoolVar(&withMail, "with-mail", false, "include the quarantined mail")
	cmd.Flags().BoolVar(&inspect, "inspect", false, "print the header of FILE and check it whole (checksum and content)")
	return cmd
}

// runBackup streams a backup into path (atomically) or to stdout, checking it as it
// arrives: a backup cut short by the daemon never verifies. tr, if not nil, shows the
// bytes received.
func runBackup(ctx context.Context, c BackupAPI, path string, withMail bool, stdout, stderr io.Writer, tr *transfer) error {
	rc, err := c.Backup(ctx, withMail)
	if err != nil {
		return err
	}
	defer rc.Close()
	tr.estimate(rc)
	src := tr.reader(rc)
	if path == "-" {
		_, err := backup.Verify(io.TeeReader(src, stdout))
		tr.done()
		return err
	}
	var h backup.Header
	err = writeFileAtomic(path, func(w io.Writer) error {
		var err error
		h, err = backup.Verify(io.TeeReader(src, w))
		tr.done()
		if err != nil {
			return fmt.Errorf("backup incomplete, %s not written: %w", path, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(stderr, "backup of cluster %s at index %d: %d entries, %d messages written to %s\n",
		orNone(h.ClusterID), h.Index, h.Entries, h.Mail, path)
	return err
}

func orNone(s string) string {
	if s == "" {
		return "(none: standalone node)"
	}
	return s
}

// runInspect prints a backup's header and checks it whole.
func runInspect(path string, w io.Writer) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	h, verr := backup.Verify(f)
	if h.Kind == "" {
		return verr
	}
	fmt.Fprintf(w, "format:     %d\ncluster:    %s\nindex:      %d\ncreated:    %s\nentries:    %d\nmail:       %d messages (with mail: %v)\n",
		h.Format, orNone(h.ClusterID), h.Index, h.Created.Format("2006-01-02T15:04:05Z07:00"), h.Entries, h.Mail, h.WithMail)
	if errors.Is(verr, backup.ErrInvalid) {
		fmt.Fprintln(w, "content:    INVALID")
		return fmt.Errorf("%s: %w: a restore would refuse it", path, verr)
	}
	if verr != nil {
		fmt.Fprintln(w, "checksum:   FAILED")
		return fmt.Errorf("%s: %w", path, verr)
	}
	_, err = fmt.Fprintln(w, "checksum:   ok\ncontent:    ok")
	return err
}

func (a *app) restoreCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "restore FILE",
		Short: "Restore a backup on a node that is in no cluster",
		Long: `Replace this node's configuration (and quarantine, if the backup holds it) with the
backup's. The node must be in no cluster: cluster identity, members and certificates are
never restored. The manual's total cluster failure:

  1. restore the backup on a fresh node:   pmgcm restore FILE
  2. make it the master of a new cluster:  pmgcm create
  3. install new nodes and join them:      pmgcm join <master_ip>   (on each)

Restored messages keep their state (quarantined or released) and the time they were
first received, from which retention counts; they get new IDs, from this node.

The whole file is checked before anything changes (checksum, format, and content: every
key and value, every message's metadata and the SHA-256 of its body), and its mail is
imported into a staging area that replaces the quarantine only once all of it is in: a
truncated, corrupt, invalid or newer-format file is refused with nothing changed.`,
		Args: posArgs("FILE"),
		RunE: a.runLongE(func(ctx context.Context, c API, args []string) error {
			b, ok := c.(BackupAPI)
			if !ok {
				return errors.New("this client cannot stream backups")
			}
			return runRestore(ctx, b, args[0], a.stdout, a.newTransfer)
		}),
	}
}

// runRestore checks the backup at path, then streams it to the daemon. newTransfer makes
// the progress of each of the two passes over the file (nil ones show nothing).
func runRestore(ctx context.Context, c BackupAPI, path string, w io.Writer, newTransfer func(what string, total int64) *transfer) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	var size int64
	if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
		size = fi.Size()
	}
	// Check the file here first: a bad file is refused without a round trip.
	tr := newTransfer("restore: checking %s", size)
	_, err = backup.Verify(tr.reader(f))
	tr.done()
	if err != nil {
		return fmt.Errorf("%s: %w; nothing was changed", path, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	tr = newTransfer("restore: %s sent", size)
	res, err := c.Restore(ctx, tr.reader(f))
	tr.done()
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "restored %d entries and %d messages from cluster %s (index %d)\nnext: pmgcm create, then join the other nodes\n",
		res.Entries, res.Mail, orNone(res.ClusterID), res.Index)
	return err
}
