// Package packaging holds what installs pmgcm on a host, beside the binaries: the systemd
// unit of pmgclusterd (systemd/pmgclusterd.service) and an example of its config file
// (pmgclusterd.toml). `make install` lays them out with the man pages and shell
// completions; the tests here check that tree. It has no code and imports nothing.
package packaging
