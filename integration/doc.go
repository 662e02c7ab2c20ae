// Package integration holds the end-to-end tests of pmgcm: they build the real pmgcm and
// pmgclusterd binaries once per run and drive clusters of real processes, each node on
// its own loopback address (127.0.x.y, from internal/testutil, which keeps two test runs
// at once apart), with kill -9, SIGSTOP and restarts. Nothing of the cluster is mocked.
// Under -short (make test-unit) they skip and the binaries are not built; only the tests
// of pure helpers, such as the linearizability model, run.
package integration
