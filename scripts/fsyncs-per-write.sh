#!/usr/bin/env bash
# fsyncs-per-write.sh counts the fsync and fdatasync calls of one pmgclusterd per
# acknowledged configuration write: a one-node cluster on 127.0.77.1 in a temporary
# directory, strace -f -c on the daemon during N sequential `pmgcm config set`.
#
#   scripts/fsyncs-per-write.sh [PMGCLUSTERD [N]]   (defaults: bin/pmgclusterd, 300)
#
# Needs strace and bin/pmgcm (make build). Compare two builds by running it with each.
set -euo pipefail
cd "$(dirname "$0")/.."
daemon=${1:-bin/pmgclusterd}
n=${2:-300}
cli=bin/pmgcm
d=$(mktemp -d)
sock=$d/s.sock
"$daemon" --data-dir "$d/data" --ip 127.0.77.1 --port 18777 --socket "$sock" --smtp-port 0 >"$d/log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$d"' EXIT
for _ in $(seq 100); do "$cli" --socket "$sock" status --list-single-node >/dev/null 2>&1 && break; sleep 0.1; done
"$cli" --socket "$sock" create >/dev/null
for i in $(seq 20); do "$cli" --socket "$sock" config set "warm/$i" v >/dev/null; done
strace -f -c -e trace=fsync,fdatasync -p "$pid" -o "$d/strace.out" 2>/dev/null &
sp=$!
sleep 1
for i in $(seq "$n"); do "$cli" --socket "$sock" config set "k/$i" vvvvvvvvvvvvvvvvvvvvvvvvvvvvvv >/dev/null; done
kill -INT $sp
wait $sp 2>/dev/null || true
syncs=$(awk '$NF == "fsync" || $NF == "fdatasync" { s += $4 } END { print s + 0 }' "$d/strace.out")
echo "daemon=$daemon writes=$n syncs=$syncs per_write=$(awk -v s="$syncs" -v n="$n" 'BEGIN { printf "%.2f", s / n }')"
