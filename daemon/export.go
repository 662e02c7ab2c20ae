package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"

	"github.com/hashicorp/go-hclog"

	"github.com/pmgcm/pmgcm/fsm"
)

// manifestName is the exporter's record, in the export directory, of the files it wrote
// and the state-machine index it has exported up to.
const manifestName = ".pmgcm-export.json"

// maxManifest bounds the manifest the exporter reads back: a few hundred bytes per
// exported file, far below it; a larger one is refused (remove it to export again).
const maxManifest = 64 << 20

// exportManifest lists the keys whose files the exporter owns: it never removes a file
// it did not write.
type exportManifest struct {
	Index uint64            `json:"index"`
	Files map[string]uint64 `json:"files"` // key -> version written
}

// exporter writes configuration entries under chosen prefixes as files into a directory
// after each applied change (pmgclusterd --config-export-dir), so that the gateway's
// services read the synchronized configuration as ordinary files. It writes through
// a handle of the directory (exportdir.go) that never follows a symbolic link.
//
// It owns the export directory and its manifest, and needs of the daemon only the state
// machine, a wait for the next applied index, and the daemon's background tasks.
type exporter struct {
	fsm      *fsm.FSM
	logger   hclog.Logger
	dir      string
	x        *exportDir
	prefixes []string
	m        exportManifest
	// waitApplied waits until the state machine has applied an index (raftSlot.waitApplied).
	waitApplied func(ctx context.Context, index uint64) error
	// bg and stopContext are the daemon's background tasks and their context.
	bg          *sync.WaitGroup
	stopContext func() (context.Context, context.CancelFunc)
}

// newExporter returns the configuration exporter of d (--config-export-dir), whose fsm
// is made.
func newExporter(d *Daemon) *exporter {
	e := &exporter{
		fsm: d.fsm, logger: d.logger, dir: d.cfg.ExportDir, prefixes: d.cfg.ExportPrefixes,
		waitApplied: d.raft.waitApplied, bg: &d.bg, stopContext: d.stopContext,
	}
	if len(e.prefixes) == 0 {
		e.prefixes = []string{""}
	}
	return e
}

// run keeps the export directory in step with the state machine until the daemon stops.
// The caller has added it to bg.
func (e *exporter) run() {
	defer e.bg.Done()
	if err := e.load(); err != nil {
		e.logger.Error("config export disabled: cannot read its manifest", "dir", e.dir, "error", err)
		if e.x != nil {
			_ = e.x.Close()
		}
		return
	}
	defer e.x.Close()
	ctx, cancel := e.stopContext()
	defer cancel()
	for {
		if err := e.sync(); err != nil {
			e.logger.Error("config export", "dir", e.dir, "error", err)
		}
		if err := e.waitApplied(ctx, e.m.Index+1); err != nil {
			return
		}
	}
}

func (e *exporter) manifestPath() string { return filepath.Join(e.dir, manifestName) }

// load opens the export directory (creating it, mode 0750) and reads the manifest.
func (e *exporter) load() error {
	x, err := openExportDir(e.dir)
	if err != nil {
		return err
	}
	e.x = x
	e.m = exportManifest{Files: map[string]uint64{}}
	b, err := e.x.readFile(manifestName, maxManifest)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, &e.m); err != nil {
		return fmt.Errorf("%s: %w (remove it to export everything again)", e.manifestPath(), err)
	}
	if e.m.Files == nil {
		e.m.Files = map[string]uint64{}
	}
	return nil
}

// sync exports what changed since the manifest's index. When the state was replaced
// (a join resets the state machine below that index) or the changes since it are no
// longer all known (reset), it reconciles the whole directory instead.
func (e *exporter) sync() error {
	f := e.fsm
	idx := f.AppliedIndex()
	from := e.m.Index
	full := idx < from
	if full {
		from = 0
	}
	var changes []fsm.Change
	for _, p := range e.prefixes {
		cs, reset, err := f.Changes(p, from)
		if err != nil {
			return err
		}
		full = full || reset
		changes = append(changes, cs...)
	}
	if full {
		live := map[string]bool{}
		for _, c := range changes {
			live[c.Key] = !c.Deleted
		}
		for key := range e.m.Files {
			if !live[key] {
				changes = append(changes, fsm.Change{Key: key, Deleted: true})
			}
		}
	}
	sort.Slice(changes, func(i, j int) bool { return changes[i].Version < changes[j].Version })
	next := max(idx, from)
	if full {
		next = idx
	}
	var errs []error
	for _, c := range changes {
		next = max(next, c.Version)
		if err := e.apply(c); err != nil {
			errs = append(errs, err)
		}
	}
	e.m.Index = next
	b, err := json.MarshalIndent(e.m, "", "  ")
	if err != nil {
		return err
	}
	if err := e.x.writeFile(manifestName, b, 0o640); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// apply writes or removes the file of one entry.
func (e *exporter) apply(c fsm.Change) error {
	// A key that passes fsm.ValidateKey (printable, no empty, "." or ".." segment) is a
	// relative path inside the directory; keys written before the ban on "." and ".."
	// may still be in the state, and are refused here. The directory handle refuses
	// symbolic links on the way.
	if err := fsm.ValidateKey(c.Key); err != nil || c.Key == manifestName {
		return fmt.Errorf("key %q cannot be exported as a file", c.Key)
	}
	if c.Deleted {
		if _, owned := e.m.Files[c.Key]; !owned {
			return nil
		}
		if err := e.x.remove(c.Key); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("export: remove %s: %w", c.Key, err)
		}
		delete(e.m.Files, c.Key)
		return nil
	}
	if v, ok := e.m.Files[c.Key]; ok && v == c.Version {
		if e.x.exists(c.Key) {
			return nil
		}
	}
	if err := e.x.writeFile(c.Key, c.Value, 0o640); err != nil {
		return fmt.Errorf("export %s: %w", c.Key, err)
	}
	e.m.Files[c.Key] = c.Version
	return nil
}
