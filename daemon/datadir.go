package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/pmgcm/pmgcm/internal/dirsync"
)

// nodeFileFormat is the version of node.json this daemon writes and reads.
const nodeFileFormat = 1

// nodeFile is node.json: who this node is.
type nodeFile struct {
	Format int    `json:"format"`
	Name   string `json:"name"`
	IP     string `json:"ip"`
	Port   int    `json:"port"`
	// CID is this node's cluster ID: 1 on a standalone node (it becomes CID 1 at create),
	// the assigned CID after a join.
	CID uint64 `json:"cid"`
	// Joined is true once the node joined a cluster: it never bootstraps Raft itself.
	Joined bool `json:"joined,omitempty"`
	// WipeRaft is set while a join replaces the node's Raft state; a start that finds it
	// set finishes the job.
	WipeRaft bool `json:"wipe_raft,omitempty"`
	// Removed names the cluster that removed this node (pmgcm delete); the node then
	// serves nothing of the cluster until it joins again.
	Removed string `json:"removed,omitempty"`
	// Fenced is set when a forced promotion elsewhere left this node in an older epoch:
	// it takes no part in Raft until `pmgcm sync --master_ip` re-admits it.
	Fenced *fenceInfo `json:"fenced,omitempty"`
	// PendingEpoch is set while a forced promotion of this node is under way: the new
	// epoch to commit once the node leads alone. A start that finds it finishes the job.
	PendingEpoch uint64 `json:"pending_epoch,omitempty"`
	// JoinIndex is the state-machine index at which this node became a member.
	JoinIndex uint64 `json:"join_index,omitempty"`
}

// fenceInfo says who superseded this node.
type fenceInfo struct {
	ClusterID  string `json:"cluster_id"`
	Epoch      uint64 `json:"epoch"`
	MasterCID  uint64 `json:"master_cid"`
	MasterName string `json:"master_name"`
	MasterIP   string `json:"master_ip"`
}

// dataDir is an opened, locked data directory.
type dataDir struct {
	path string
	lock *os.File
}

func (d *dataDir) file(parts ...string) string {
	return filepath.Join(append([]string{d.path}, parts...)...)
}

// openDataDir creates (if needed) and locks the data directory. It refuses a directory
// that another daemon holds or that this process cannot use.
func openDataDir(path string) (*dataDir, error) {
	if err := os.MkdirAll(path, 0o700); err != nil {
		return nil, unusable(path, err)
	}
	// Prove the directory is readable and writable: as root, permission bits do not
	// stop us, but as any other user they do, and a read-only mount stops everyone.
	if _, err := os.ReadDir(path); err != nil {
		return nil, unusable(path, err)
	}
	lockPath := filepath.Join(path, "LOCK")
	f, err := os.OpenFile(lockPath, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, unusable(path, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		holder := "another process"
		if b, rerr := os.ReadFile(lockPath); rerr == nil && len(strings.TrimSpace(string(b))) > 0 {
			holder = "pid " + strings.TrimSpace(string(b))
		}
		_ = f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s is held by %s: stop that daemon first, or give this one another --data-dir",
				ErrDataDirInUse, path, holder)
		}
		return nil, unusable(path, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &dataDir{path: path, lock: f}, nil
}

func unusable(path string, err error) error {
	return fmt.Errorf("%w: %s: %v: run pmgclusterd as the user that owns it, or fix its ownership and permissions (it needs read and write access)",
		ErrDataDirUnreadable, path, err)
}

// close releases the lock.
func (d *dataDir) close() error {
	if d == nil || d.lock == nil {
		return nil
	}
	err := d.lock.Close()
	d.lock = nil
	return err
}

// readNodeFile reads node.json; ok is false when there is none yet.
func (d *dataDir) readNodeFile() (nf nodeFile, ok bool, err error) {
	path := d.file("node.json")
	b, err := readFileBounded(path, maxNodeFileBytes)
	if errors.Is(err, os.ErrNotExist) {
		return nodeFile{}, false, nil
	}
	if err != nil {
		return nodeFile{}, false, readErr(path, err)
	}
	if err := json.Unmarshal(b, &nf); err != nil {
		return nodeFile{}, false, corrupt(path, err)
	}
	if nf.Format != nodeFileFormat {
		return nodeFile{}, false, corrupt(path, fmt.Errorf("format %d, this pmgclusterd reads format %d", nf.Format, nodeFileFormat))
	}
	if nf.IP == "" || nf.Port == 0 || nf.CID == 0 {
		return nodeFile{}, false, corrupt(path, errors.New("missing ip, port or cid"))
	}
	return nf, true, nil
}

func (d *dataDir) writeNodeFile(nf nodeFile) error {
	nf.Format = nodeFileFormat
	b, err := json.MarshalIndent(nf, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(d.file("node.json"), append(b, '\n'), 0o600)
}

func corrupt(path string, err error) error {
	return fmt.Errorf("%w: %s: %v: move the data directory aside and join this node to its cluster again (pmgcm join), or restore a backup on a fresh node",
		ErrCorruptData, path, err)
}

// writeFileAtomic writes data to path through a temporary file, fsync and rename, then
// syncs the directory, so that a crash leaves either the old or the new file.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	name := tmp.Name()
	cleanup := func(err error) error {
		_ = tmp.Close()
		_ = os.Remove(name)
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		return cleanup(err)
	}
	if err := tmp.Chmod(perm); err != nil {
		return cleanup(err)
	}
	if err := tmp.Sync(); err != nil {
		return cleanup(err)
	}
	if err := tmp.Close(); err != nil {
		return cleanup(err)
	}
	if err := os.Rename(name, path); err != nil {
		_ = os.Remove(name)
		return err
	}
	return dirsync.Sync(dir)
}
