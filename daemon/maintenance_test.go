package daemon

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestReadMaintenance(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, maintenanceFile)
	if rec, err := readMaintenance(path); err != nil || rec.On {
		t.Fatalf("no file: %+v %v", rec, err)
	}
	want := maintenanceRecord{On: true, Since: time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)}
	b, _ := json.Marshal(want)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if rec, err := readMaintenance(path); err != nil || rec != want {
		t.Fatalf("got %+v %v, want %+v", rec, err, want)
	}
	for _, bad := range []string{"{", `{"on":"yes"}`, strings.Repeat(" ", maxMaintenanceFile+1)} {
		if err := os.WriteFile(path, []byte(bad), 0o600); err != nil {
			t.Fatal(err)
		}
		if rec, err := readMaintenance(path); err == nil || rec.On {
			t.Errorf("%.20q: %+v %v, want an error and in service", bad, rec, err)
		}
	}
}

// FuzzMaintenanceFile checks the decoder of maintenance.json: it never panics, and what
// it accepts it writes back the same.
func FuzzMaintenanceFile(f *testing.F) {
	f.Add([]byte(`{"on":true,"since":"2026-12-01T09:00:00Z"}`))
	f.Add([]byte(`{"on":false}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		rec, err := parseMaintenance(b)
		if err != nil {
			if rec.On {
				t.Fatal("an unreadable file put the node in maintenance")
			}
			return
		}
		again, _ := json.Marshal(rec)
		if rec2, err := parseMaintenance(again); err != nil || rec2.On != rec.On || !rec2.Since.Equal(rec.Since) {
			t.Fatalf("round trip of %q: %+v %v", again, rec2, err)
		}
	})
}
