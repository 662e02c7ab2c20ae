#!/bin/sh
# ci-deps.sh installs, on Debian or Ubuntu, the tools the packaging tests use beyond Go:
# dpkg-dev (dpkg-shlibdeps, dpkg-buildflags for make deb), binutils (strip), lintian,
# and prometheus (for promtool). It installs only what is missing and is quiet; run it as
# root (or with sudo) before `make test`. Without these tools those tests skip with a
# message, they do not fail.
set -eu

need=
command -v dpkg-shlibdeps >/dev/null 2>&1 || need="$need dpkg-dev"
command -v dpkg-buildflags >/dev/null 2>&1 || need="$need dpkg-dev"
command -v strip >/dev/null 2>&1 || need="$need binutils"
command -v lintian >/dev/null 2>&1 || need="$need lintian"
command -v promtool >/dev/null 2>&1 || need="$need prometheus"
[ -n "$need" ] || exit 0

if ! command -v apt-get >/dev/null 2>&1; then
	echo "ci-deps: no apt-get: install$need by hand (the packaging tests skip without them)" >&2
	exit 1
fi
sudo=
[ "$(id -u)" -eq 0 ] || sudo=sudo
export DEBIAN_FRONTEND=noninteractive
# promtool comes with the prometheus server: a policy-rc.d that says no keeps the
# package from starting it (where systemd runs), as long as the install lasts.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
	printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
	$sudo chmod 0755 "$policy"
	trap '$sudo rm -f "$policy"' EXIT
fi
$sudo apt-get update -qq
# --no-install-recommends: prometheus recommends its exporters; promtool is all we need.
# shellcheck disable=SC2086 # $need is a list of package names
$sudo apt-get install -y -qq --no-install-recommends $need >/dev/null
