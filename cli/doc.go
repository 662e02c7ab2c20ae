// Package cli owns the pmgcm command-line tool: the cobra command tree and the output
// formatting (the status table, config listings, JSON). It talks to the local pmgclusterd
// through package api/client, the Go client of the control socket; API is the part of it
// that the commands need.
//
// Every command is a pure function of (API, arguments) -> stdout/stderr, so tests drive it
// with a fake API and captured output. Commands that ask the operator (join, and the forced
// recoveries promote --force and delete --force) do so through the terminal interface,
// present only when stdin is a terminal, so tests script the answers; off a terminal join
// refuses rather than guess, and a forced recovery takes --force itself as the consent
// (after printing its split-brain warning). Errors print as
// "pmgcm: <message>" on stderr; runtime errors exit 1, bad usage exits 2.
//
// The CLI talks to the daemon only through the socket: of this project, cli imports only
// packages api, api/client and backup (the backup file format), and must never import
// daemon, raftnode, fsm, transport or any other daemon package.
package cli
