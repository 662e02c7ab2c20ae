package integration

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// A release of RELEASES, built from the repository's own history for the upgrade drill.
type release struct {
	Name, Commit string
}

// previousRelease returns the newest release that RELEASES names.
func previousRelease(t testing.TB) release {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "RELEASES"))
	if err != nil {
		t.Fatalf("the list of releases: %v", err)
	}
	defer f.Close()
	var last release
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) < 2 || len(fields[1]) != 40 {
			t.Fatalf("RELEASES: %q: want VERSION COMMIT(40 hex digits) [DATE]", line)
		}
		last = release{Name: fields[0], Commit: fields[1]}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if last.Commit == "" {
		t.Fatal("RELEASES names no release")
	}
	return last
}

// releaseBuilds holds the binaries built in this run, by commit.
var releaseBuilds sync.Map // commit -> *releaseBuild

type releaseBuild struct {
	once sync.Once
	dir  string
	err  error
	skip string
}

// releaseBinaries returns a directory holding pmgcm and pmgclusterd of release r, built
// from the repository's history (git archive of its commit) with the race detector as
// TestMain builds the current ones, and cached by commit under the user's cache
// directory so that reruns are fast. It skips the test when the history is not there (a
// shallow clone or a source tarball).
func releaseBinaries(t testing.TB, r release) string {
	t.Helper()
	v, _ := releaseBuilds.LoadOrStore(r.Commit, &releaseBuild{})
	b := v.(*releaseBuild)
	b.once.Do(func() { b.dir, b.skip, b.err = buildRelease(r) })
	if b.skip != "" {
		t.Skip(b.skip)
	}
	if b.err != nil {
		t.Fatalf("build release %s (%s): %v", r.Name, r.Commit, b.err)
	}
	return b.dir
}

func buildRelease(r release) (dir, skip string, err error) {
	out, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		return "", fmt.Sprintf("no git repository around the sources (%v): cannot build release %s (commit %s) for the upgrade drill", err, r.Name, r.Commit), nil
	}
	root := strings.TrimSpace(string(out))
	if err := exec.Command("git", "-C", root, "cat-file", "-e", r.Commit+"^{commit}").Run(); err != nil {
		return "", fmt.Sprintf("commit %s of release %s is not in this repository's history (a shallow clone? git fetch --unshallow): the upgrade drill needs it", r.Commit, r.Name), nil
	}
	race := os.Getenv("PMGCM_TEST_NORACE") == ""
	flavour := "norace"
	if race {
		flavour = "race"
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	base := filepath.Join(cache, "pmgcm-releases")
	dir = filepath.Join(base, r.Commit+"-"+flavour)
	if haveBinaries(dir) {
		return dir, "", nil
	}
	if err := os.MkdirAll(base, 0o755); err != nil {
		return "", "", err
	}
	src, err := os.MkdirTemp("", "pmgcm-release-src-")
	if err != nil {
		return "", "", err
	}
	defer os.RemoveAll(src)
	tarball := filepath.Join(src, "src.tar")
	if out, err := exec.Command("git", "-C", root, "archive", "--format=tar", "-o", tarball, r.Commit).CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("git archive: %v: %s", err, out)
	}
	tree := filepath.Join(src, "tree")
	if err := os.Mkdir(tree, 0o755); err != nil {
		return "", "", err
	}
	if out, err := exec.Command("tar", "-x", "-f", tarball, "-C", tree).CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("tar: %v: %s", err, out)
	}
	tmp, err := os.MkdirTemp(base, ".build-")
	if err != nil {
		return "", "", err
	}
	defer os.RemoveAll(tmp)
	for _, name := range []string{"pmgcm", "pmgclusterd"} {
		args := []string{"build", "-buildvcs=false"}
		if race {
			args = append(args, "-race")
		}
		args = append(args, "-o", filepath.Join(tmp, name), "./cmd/"+name)
		cmd := exec.Command("go", args...)
		cmd.Dir = tree
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", "", fmt.Errorf("go build %s at %s: %v: %s", name, r.Commit, err, out)
		}
	}
	// Into place at once; another run may have got there first.
	if err := os.Rename(tmp, dir); err != nil && !haveBinaries(dir) {
		return "", "", err
	}
	return dir, "", nil
}

func haveBinaries(dir string) bool {
	for _, name := range []string{"pmgcm", "pmgclusterd"} {
		if fi, err := os.Stat(filepath.Join(dir, name)); err != nil || !fi.Mode().IsRegular() {
			return false
		}
	}
	return true
}
