package cli

import (
	"fmt"
	"time"

	"github.com/pmgcm/pmgcm/api"
)

// backupLine is the status line about the scheduled backups: the node that attempted
// one last, when, and how it went; "" when no node has them on (--backup-dir).
func backupLine(nodes []api.Node, loc *time.Location) string {
	var last *api.Node
	for i := range nodes {
		b := nodes[i].Backup
		if b != nil && !b.Last.IsZero() && (last == nil || b.Last.After(last.Backup.Last)) {
			last = &nodes[i]
		}
	}
	if last == nil {
		return ""
	}
	if loc == nil {
		loc = time.Local
	}
	b := last.Backup
	result := fmt.Sprintf("ok, %s, %s", formatBytes(b.Size), b.File)
	if b.Error != "" {
		result = "FAILED (see the warning below)"
		if !b.LastSuccess.IsZero() {
			result += fmt.Sprintf("; last good one %s", b.LastSuccess.In(loc).Format("2006-01-02 15:04:05"))
		}
	}
	return fmt.Sprintf("last scheduled backup: %s(%d) at %s: %s", last.Name, last.CID, b.Last.In(loc).Format("2006-01-02 15:04:05"), result)
}
