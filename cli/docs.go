package cli

import (
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/pmgcm/pmgcm/api/client"
)

// DocCommand returns the pmgcm command tree as the operator sees it, completion command
// included, for rendering manual pages (cmd/pmgcm-docs). Its help shows the defaults of a
// clean environment (PMGCM_SOCKET unset); running it prints nothing.
func DocCommand() *cobra.Command {
	a := &app{env: env{
		stdin:  strings.NewReader(""),
		stdout: io.Discard,
		stderr: io.Discard,
		getenv: func(string) string { return "" },
		newAPI: func(socket string) API { return client.New(socket, client.WithUserAgent("pmgcm/"+Version)) },
	}}
	root := a.rootCmd()
	root.InitDefaultCompletionCmd()
	return root
}
