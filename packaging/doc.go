// Package packaging holds what installs pmgcm on a host, beside the binaries: the systemd
// unit of pmgclusterd (systemd/pmgclusterd.service) and an example of its config file
// (pmgclusterd.toml). `make install` lays them out with the man pages and shell
// completions; `make deb` (scripts/mkdeb.sh) makes a Debian package of that tree with
// the maintainer scripts in debian/. It also holds the monitoring that goes with the
// daemon's metrics: Prometheus alert rules (prometheus/, with promtool unit tests) and a
// Grafana dashboard (grafana/). The tests here check the tree, the package (dpkg-deb,
// lintian, an install and purge with dpkg --root) and the rules (promtool). It has no
// code and imports nothing.
package packaging
