#!/usr/bin/env bash
# mkdeb.sh builds the Debian package of pmgcm with dpkg-deb, offline: `make deb` runs it.
#
#   scripts/mkdeb.sh OUTDIR
#   scripts/mkdeb.sh --print-version   (only print the version it would give the package)
#
# Environment: VERSION (the package version; default from `git describe --tags`, or
# 0~gitDATE.HASH before the first tag, also when VERSION is a bare commit hash), DEB_ARCH (default: dpkg --print-architecture),
# DEB_MAINTAINER (default: the author of HEAD), MAKE and GO. It prints the .deb's path.
#
# The tree is `make install` with PREFIX=/usr and Debian's paths, plus: stripped binaries,
# gzipped man pages, the config template postinst copies, the Prometheus rules and the
# Grafana dashboard, the copyright (with the licenses of the Go modules linked in) and a
# changelog; the maintainer scripts are packaging/debian/. Needs dpkg-deb and
# dpkg-shlibdeps (dpkg-dev): scripts/ci-deps.sh installs them.
set -euo pipefail
umask 022
cd "$(dirname "$0")/.."
out=${1:?usage: mkdeb.sh OUTDIR | --print-version}
MAKE=${MAKE:-make}
GO=${GO:-go}

# debversion turns a release name (v1.2.3, v1.2.3-4-gabcdef0, 1.2.3-rc1, dev) into a
# native Debian version: starts with a digit, no hyphen, only [A-Za-z0-9.+~].
debversion() {
	local v=${1#v}
	v=${v//-/+}
	v=$(printf '%s' "$v" | tr -c 'A-Za-z0-9.+~' '.')
	case "$v" in
	[0-9]*) ;;
	*) v="0~$v" ;;
	esac
	printf '%s\n' "$v"
}

dirty=
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
	dirty=+dirty
fi
untagged="0~git$(TZ=UTC git log -1 --format=%cd --date=format:%Y%m%d).$(git rev-parse --short HEAD)$dirty"
# A bare commit hash (git describe --always before the first tag) says nothing of order:
# such a build gets the dated version too.
if printf '%s' "${VERSION:-}" | grep -Eq '^[0-9a-f]{7,40}(-dirty)?$' &&
	printf '%s' "${VERSION%-dirty}" | grep -q '[a-f]'; then
	version=$untagged
elif [ -n "${VERSION:-}" ]; then
	version=$(debversion "$VERSION")
elif tag=$(git describe --tags 2>/dev/null); then
	version=$(debversion "$tag")$dirty
else
	version=$untagged
fi
if [ "$out" = --print-version ]; then
	echo "$version"
	exit 0
fi

for tool in dpkg-deb dpkg-shlibdeps dpkg-buildflags strip; do
	command -v "$tool" >/dev/null || {
		echo "mkdeb: $tool not found: install dpkg-dev and binutils (scripts/ci-deps.sh)" >&2
		exit 1
	}
done

arch=${DEB_ARCH:-$(dpkg --print-architecture)}
maintainer=${DEB_MAINTAINER:-$(git log -1 --format='%an <%ae>')}
# Every file's time is the commit's, not the build's.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root
doc=$root/usr/share/doc/pmgcm

# Built as Debian builds its programs: position-independent, the C parts (cgo: the libc
# resolver) with dpkg-buildflags' hardening flags, and -trimpath (no build paths inside).
export DEB_BUILD_MAINT_OPTIONS=${DEB_BUILD_MAINT_OPTIONS:-hardening=+all}
export CGO_CFLAGS="$(dpkg-buildflags --get CFLAGS)" CGO_CPPFLAGS="$(dpkg-buildflags --get CPPFLAGS)"
export CGO_LDFLAGS="$(dpkg-buildflags --get LDFLAGS)"
GOFLAGS="$($GO env GOFLAGS) -trimpath -buildmode=pie" $MAKE --no-print-directory install \
	GO="$GO" BIN="$work/bin" DESTDIR="$root" PREFIX=/usr \
	UNITDIR=/lib/systemd/system ZSHCOMPDIR=/usr/share/zsh/vendor-completions >&2

strip --remove-section=.comment --remove-section=.note --strip-unneeded \
	"$root/usr/bin/pmgcm" "$root/usr/bin/pmgclusterd"
gzip -9n "$root"/usr/share/man/man*/*
install -d "$root/usr/share/pmgcm/prometheus" "$root/usr/share/pmgcm/grafana"
mv "$doc/pmgclusterd.toml" "$root/usr/share/pmgcm/pmgclusterd.toml"
ln -s ../../pmgcm/pmgclusterd.toml "$doc/pmgclusterd.toml"
install -m 0644 packaging/prometheus/pmgcm-alerts.yml "$root/usr/share/pmgcm/prometheus/"
install -m 0644 packaging/grafana/pmgcm-dashboard.json "$root/usr/share/pmgcm/grafana/"

# changelog.gz: a native package's changelog, one entry for this build.
commit=$(git rev-parse HEAD)
{
	printf 'pmgcm (%s) unstable; urgency=medium\n\n' "$version"
	printf '  * Built from git commit %s.\n' "$commit"
	printf '  * The changes are in the git history of the source.\n\n'
	printf ' -- %s  %s\n' "$maintainer" "$(date -u -R -d "@$SOURCE_DATE_EPOCH")"
} | gzip -9n >"$doc/changelog.gz"

# copyright: pmgcm's own notice, then every Go module linked into the binaries with its
# license (a reference to /usr/share/common-licenses for Apache-2.0 and MPL-2.0, the
# text for the others, as their notices must be kept).
modcache=$($GO env GOMODCACHE)
goroot=$($GO env GOROOT)
indent() { sed -e 's/[[:space:]]*$//' -e 's/^$/./' -e 's/^/ /'; }
license_of() { # DIR: print the license paragraph of the module in DIR
	local f
	for f in LICENSE LICENSE.txt LICENSE.md LICENCE COPYING COPYING.txt; do
		[ -f "$1/$f" ] && break
		f=
	done
	if [ -z "$f" ]; then
		echo " No license file in the module; see its source."
	elif grep -q 'Apache License' "$1/$f" && grep -q 'Version 2.0' "$1/$f"; then
		echo " Apache License 2.0: /usr/share/common-licenses/Apache-2.0"
	elif grep -q 'Mozilla Public License' "$1/$f" && grep -q 'Version 2.0' "$1/$f"; then
		echo " Mozilla Public License 2.0: /usr/share/common-licenses/MPL-2.0"
	else
		indent <"$1/$f"
	fi
}
{
	cat <<-EOF
		pmgcm: a high-availability cluster manager for a mail gateway.

		Copyright: the pmgcm authors; see the git history of the source.
		License: the source tree states no license of its own.

		/usr/bin/pmgcm and /usr/bin/pmgclusterd are Go programs. They contain the Go
		standard library and the modules below, at the versions listed; each one's
		copyright and license follow.

		Go standard library $($GO env GOVERSION)
	EOF
	indent <"$goroot/LICENSE"
	$GO version -m "$root/usr/bin/pmgcm" "$root/usr/bin/pmgclusterd" |
		awk '$1 == "dep" { print $2, $3 }' | sort -u |
		while read -r mod ver; do
			# The module cache spells an upper-case letter as ! and the lower-case one.
			esc=$(printf '%s' "$mod" | sed 's/[A-Z]/!&/g' | tr 'A-Z' 'a-z')
			printf '\n%s %s\n' "$mod" "$ver"
			license_of "$modcache/$esc@$ver"
		done
} >"$doc/copyright"

install -d "$root/DEBIAN"
install -m 0755 packaging/debian/postinst packaging/debian/prerm packaging/debian/postrm "$root/DEBIAN/"
if [ -f packaging/debian/lintian-overrides ]; then
	install -D -m 0644 packaging/debian/lintian-overrides "$root/usr/share/lintian/overrides/pmgcm"
fi

# The shared libraries the binaries use (libc, with cgo's resolver), as dpkg-shlibdeps
# finds them; it wants a debian/control to read.
mkdir -p "$work/src/debian"
printf 'Source: pmgcm\n\nPackage: pmgcm\nArchitecture: any\n' >"$work/src/debian/control"
depends=$(cd "$work/src" && dpkg-shlibdeps -O -e"$root/usr/bin/pmgcm" -e"$root/usr/bin/pmgclusterd" 2>/dev/null |
	sed -n 's/^shlibs:Depends=//p')
[ -n "$depends" ] || { echo "mkdeb: dpkg-shlibdeps found no dependencies" >&2; exit 1; }

find "$root" -newermt "@$SOURCE_DATE_EPOCH" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat >"$root/DEBIAN/control" <<EOF
Package: pmgcm
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $size
Depends: $depends
Section: admin
Priority: optional
Description: high-availability cluster manager for a mail gateway
 pmgcm keeps the configuration and the mail quarantine of a cluster of mail
 gateway nodes the same on every node, in a Raft-replicated store: the master
 is the Raft leader, the nodes talk over one mutual-TLS port each, and a node
 restarted after a crash catches up on its own.
 .
 This package holds the node daemon pmgclusterd with its systemd unit, the
 operator command pmgcm, their manual pages and shell completions, and
 Prometheus alert rules and a Grafana dashboard for the daemon's metrics.
EOF
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/md5sums"

mkdir -p "$out"
deb=$out/pmgcm_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >&2
echo "$deb"
