#!/bin/sh
# netfault-deps.sh installs what the network-fault integration tests
# (internal/netfault, integration/netfault_*_test.go) need: nft (nftables),
# ip (iproute2) and iptables-legacy (iptables; its NFQUEUE target carries the
# packets to the delay queue, as this kernel has no nft queue statement). Idempotent: it runs apt-get only when a tool is missing.
# Needs root; the tests themselves skip with a message when not root.
set -eu
missing=""
command -v nft >/dev/null 2>&1 || missing="$missing nftables"
command -v ip >/dev/null 2>&1 || missing="$missing iproute2"
command -v iptables-legacy >/dev/null 2>&1 || missing="$missing iptables"
if [ -z "$missing" ]; then
	echo "netfault-deps: nft, ip and iptables-legacy present"
	exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
	echo "netfault-deps: need root to install:$missing" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update
# shellcheck disable=SC2086
apt-get install -y --no-install-recommends $missing
