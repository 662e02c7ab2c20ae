package daemon

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// errExportLink means a path component under the export directory is a symbolic link,
// which the exporter never follows or replaces: a service that can write in the
// directory must not make the (root) daemon write elsewhere.
var errExportLink = errors.New("is a symbolic link, which the config export never follows or replaces: remove it")

// exportDirMode is the mode of the subdirectories the exporter makes: the group that
// reads the files (mode 0640) can reach them.
const exportDirMode = 0o750

// exportDir is the export directory as an open handle. Every file under it is reached
// with openat(2) from that handle one path component at a time, each opened with
// O_NOFOLLOW: no symbolic link is followed (whatever a lexical check of the path would
// say), so nothing is ever read or written outside the directory.
type exportDir struct {
	path string
	fd   int
}

// openExportDir creates the export directory if needed (mode 0750) and opens it. The
// directory itself may be reached through links: the operator chose it.
func openExportDir(path string) (*exportDir, error) {
	if err := os.MkdirAll(path, exportDirMode); err != nil {
		return nil, err
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return &exportDir{path: path, fd: fd}, nil
}

// Close closes the handle.
func (x *exportDir) Close() error { return unix.Close(x.fd) }

func (x *exportDir) linkErr(rel string) error {
	return fmt.Errorf("%s %w", filepath.Join(x.path, filepath.FromSlash(rel)), errExportLink)
}

// parent opens the directory that holds rel's file (creating the missing directories,
// mode 0750, when create is set) and returns its descriptor, which the caller closes
// with x.release, and the file's name in it.
func (x *exportDir) parent(rel string, create bool) (int, string, error) {
	parts := strings.Split(rel, "/")
	for _, p := range parts {
		if p == "" || p == "." || p == ".." {
			return -1, "", fmt.Errorf("%q: not a path inside the export directory", rel)
		}
	}
	fd := x.fd
	for i, p := range parts[:len(parts)-1] {
		sub := strings.Join(parts[:i+1], "/")
		created := false
		if create {
			err := unix.Mkdirat(fd, p, exportDirMode)
			if err != nil && !errors.Is(err, unix.EEXIST) {
				x.release(fd)
				return -1, "", &os.PathError{Op: "mkdir", Path: filepath.Join(x.path, sub), Err: err}
			}
			created = err == nil
		}
		nfd, err := unix.Openat(fd, p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			isLink := x.isLink(fd, p)
			x.release(fd)
			if isLink {
				return -1, "", x.linkErr(sub)
			}
			return -1, "", &os.PathError{Op: "open", Path: filepath.Join(x.path, sub), Err: err}
		}
		if created {
			// Exactly 0750 whatever the umask, so that the files' group can read them;
			// through the descriptor, so a link swapped in meanwhile is never followed.
			if err := unix.Fchmod(nfd, exportDirMode); err != nil {
				x.release(fd)
				_ = unix.Close(nfd)
				return -1, "", &os.PathError{Op: "chmod", Path: filepath.Join(x.path, sub), Err: err}
			}
		}
		x.release(fd)
		fd = nfd
	}
	return fd, parts[len(parts)-1], nil
}

// release closes a descriptor parent returned (never the handle itself).
func (x *exportDir) release(fd int) {
	if fd != x.fd && fd >= 0 {
		_ = unix.Close(fd)
	}
}

// isLink reports whether name in directory fd is a symbolic link.
func (x *exportDir) isLink(fd int, name string) bool {
	var st unix.Stat_t
	return unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK
}

// exists reports whether rel is there, as a file that is not a link.
func (x *exportDir) exists(rel string) bool {
	fd, name, err := x.parent(rel, false)
	if err != nil {
		return false
	}
	defer x.release(fd)
	var st unix.Stat_t
	return unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFREG
}

// readFile reads rel, at most max bytes, refusing a link.
func (x *exportDir) readFile(rel string, max int64) ([]byte, error) {
	fd, name, err := x.parent(rel, false)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, os.ErrNotExist
		}
		return nil, err
	}
	defer x.release(fd)
	ffd, err := unix.Openat(fd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		if x.isLink(fd, name) {
			return nil, x.linkErr(rel)
		}
		return nil, &os.PathError{Op: "open", Path: filepath.Join(x.path, rel), Err: err}
	}
	f := os.NewFile(uintptr(ffd), filepath.Join(x.path, rel))
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err == nil && int64(len(b)) > max {
		err = fmt.Errorf("%s is over %d bytes", f.Name(), max)
	}
	return b, err
}

// writeFile replaces rel atomically (a temporary file in the same directory, fsync,
// rename, fsync of the directory) with data, mode perm. A link at rel or on the way to
// it is refused, never followed nor replaced.
func (x *exportDir) writeFile(rel string, data []byte, perm os.FileMode) error {
	fd, name, err := x.parent(rel, true)
	if err != nil {
		return err
	}
	defer x.release(fd)
	if x.isLink(fd, name) {
		return x.linkErr(rel)
	}
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	tmp := "." + name + ".tmp" + hex.EncodeToString(rnd[:])
	tfd, err := unix.Openat(fd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return &os.PathError{Op: "create", Path: filepath.Join(x.path, filepath.Dir(rel), tmp), Err: err}
	}
	f := os.NewFile(uintptr(tfd), tmp)
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(perm)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		if err = unix.Renameat(fd, tmp, fd, name); err != nil {
			err = &os.PathError{Op: "rename", Path: filepath.Join(x.path, rel), Err: err}
		}
	}
	if err != nil {
		_ = unix.Unlinkat(fd, tmp, 0)
		return err
	}
	return unix.Fsync(fd)
}

// remove removes rel, refusing a link (its target is never touched either way).
func (x *exportDir) remove(rel string) error {
	fd, name, err := x.parent(rel, false)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return os.ErrNotExist
		}
		return err
	}
	defer x.release(fd)
	if x.isLink(fd, name) {
		return x.linkErr(rel)
	}
	if err := unix.Unlinkat(fd, name, 0); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return os.ErrNotExist
		}
		return &os.PathError{Op: "remove", Path: filepath.Join(x.path, rel), Err: err}
	}
	return nil
}
