#!/usr/bin/env bash
# Starts a local pmgcm cluster under ./run (one pmgclusterd per loopback address) and
# prints its status; `demo.sh stop` stops it. Used by `make demo` / `make demo-stop`.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${RUN:-$PWD/run}
NODES=${NODES:-3}
PORT=${PORT:-8006}
SMTP_PORT=${SMTP_PORT:-2525}
BIN=$PWD/bin

stop() {
	for pidfile in "$RUN"/node*/pmgclusterd.pid; do
		[ -f "$pidfile" ] || continue
		pid=$(cat "$pidfile")
		if kill "$pid" 2>/dev/null; then
			for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
			echo "stopped $(basename "$(dirname "$pidfile")") (pid $pid)"
		fi
		rm -f "$pidfile"
	done
}

wait_socket() {
	for _ in $(seq 200); do
		"$BIN/pmgcm" --socket "$1" status --list-single-node >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	echo "pmgclusterd did not come up; see $2" >&2
	return 1
}

start() {
	mkdir -p "$RUN"
	for i in $(seq "$NODES"); do
		dir=$RUN/node$i
		mkdir -p "$dir"
		if [ -f "$dir/pmgclusterd.pid" ] && kill -0 "$(cat "$dir/pmgclusterd.pid")" 2>/dev/null; then
			echo "node$i is already running (pid $(cat "$dir/pmgclusterd.pid")); run: make demo-stop" >&2
			exit 1
		fi
		"$BIN/pmgclusterd" --data-dir "$dir/data" --ip "127.0.0.$i" --port "$PORT" --name "node$i" \
			--socket "$dir/pmgcm.sock" --smtp-port "$SMTP_PORT" >"$dir/pmgclusterd.log" 2>&1 &
		echo $! >"$dir/pmgclusterd.pid"
		wait_socket "$dir/pmgcm.sock" "$dir/pmgclusterd.log"
	done
	master=$RUN/node1/pmgcm.sock
	if "$BIN/pmgcm" --socket "$master" status | grep -q "no cluster defined"; then
		"$BIN/pmgcm" --socket "$master" create
	fi
	# The other nodes join with the command that join-cmd prints on a member; right after
	# a start the master may still be electing itself.
	line=""
	for _ in $(seq 100); do
		line=$("$BIN/pmgcm" --socket "$master" join-cmd 2>/dev/null) && break
		sleep 0.2
	done
	[ -n "$line" ] || { "$BIN/pmgcm" --socket "$master" join-cmd; exit 1; }
	# Its last line: PMGCM_JOIN_TOKEN=<TOKEN> pmgcm join <master> --fingerprint <FP>.
	line=${line##*$'\n'}
	read -r -a join <<<"$line"
	token=${join[0]#PMGCM_JOIN_TOKEN=}
	for i in $(seq 2 "$NODES"); do
		sock=$RUN/node$i/pmgcm.sock
		if "$BIN/pmgcm" --socket "$sock" status | grep -q "no cluster defined"; then
			echo "node$i: PMGCM_JOIN_TOKEN=... ${join[*]:1:3} --fingerprint ... --yes"
			PMGCM_JOIN_TOKEN=$token "$BIN/pmgcm" --socket "$sock" "${join[@]:2}" --yes
		fi
	done
	echo
	"$BIN/pmgcm" --socket "$master" status
	cat <<EOT

The cluster runs in the background, its state and logs under $RUN.
Talk to a node:   export PMGCM_SOCKET=$master; $BIN/pmgcm status
Mail:             every node takes SMTP on port $SMTP_PORT of its address; set the relay domains
                  with: $BIN/pmgcm config set mail/relay_domains example.com
                  and see the replicated quarantine with: $BIN/pmgcm quarantine list
Stop it:          make demo-stop   (make clean also removes its state)
EOT
}

case "${1:-start}" in
start) start ;;
stop) stop ;;
*) echo "usage: $0 [start|stop]" >&2; exit 2 ;;
esac
