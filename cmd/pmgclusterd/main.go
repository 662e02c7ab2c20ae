// Command pmgclusterd is the pmgcm node daemon: it runs Raft, the cluster port (TLS) and
// the control socket that the pmgcm CLI talks to. Its command line is built by package
// github.com/pmgcm/pmgcm/cmd/pmgclusterd/command.
package main

import (
	"os"

	"github.com/pmgcm/pmgcm/cmd/pmgclusterd/command"
)

func main() {
	os.Exit(command.Run(os.Args[1:], os.Stdout, os.Stderr))
}
