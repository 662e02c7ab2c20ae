// Command pmgcm is the cluster management tool of the mail gateway; see package cli.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/pmgcm/pmgcm/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
