package command

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/pmgcm/pmgcm/daemon"
	"github.com/pmgcm/pmgcm/internal/version"
)

func TestVersionFlag(t *testing.T) {
	var out, errb bytes.Buffer
	if code := Run([]string{"--version"}, &out, &errb); code != 0 {
		t.Fatalf("--version: exit %d: %s", code, errb.String())
	}
	got := out.String()
	if !strings.HasPrefix(got, "pmgclusterd "+version.Version+" ") ||
		!strings.Contains(got, fmt.Sprintf("feature level %d", version.Level)) ||
		!strings.Contains(got, fmt.Sprintf("node protocol %d", daemon.ProtocolVersion)) {
		t.Errorf("--version printed %q", got)
	}
}
