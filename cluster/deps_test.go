package cluster

import (
	"go/build"
	"strings"
	"testing"
)

// TestNeverImportsDaemon: the package, and everything of ours it imports, never imports
// daemon or cli (the package doc's rule; `go list -deps` shows the same).
func TestNeverImportsDaemon(t *testing.T) {
	const module = "github.com/pmgcm/pmgcm/"
	seen := map[string]bool{}
	var walk func(path string, via []string)
	walk = func(path string, via []string) {
		if seen[path] {
			return
		}
		seen[path] = true
		for _, banned := range []string{module + "daemon", module + "cli"} {
			if path == banned || strings.HasPrefix(path, banned+"/") {
				t.Errorf("cluster imports %s (via %s)", path, strings.Join(via, " -> "))
			}
		}
		p, err := build.Import(path, ".", 0)
		if err != nil {
			t.Fatalf("import %s: %v", path, err)
		}
		for _, imp := range p.Imports {
			if strings.HasPrefix(imp, module) {
				walk(imp, append(via, imp))
			}
		}
	}
	walk(module+"cluster", []string{module + "cluster"})
	if len(seen) < 3 {
		t.Fatalf("walked only %v", seen)
	}
}
