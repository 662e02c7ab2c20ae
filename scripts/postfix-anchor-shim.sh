#!/usr/bin/env bash
# postfix-anchor-shim.sh makes DIR/bin for the Postfix anchor (../shared/anchors/postfix/
# run-anchor.sh, SRC=DIR): the anchor reads join-cmd's last line word by word and runs it
# without its first word, as the first release printed it (pmgcm join IP --fingerprint FP
# --token T). Since then the line passes the token in the environment
# (PMGCM_JOIN_TOKEN=T pmgcm join IP --fingerprint FP), which the anchor cannot run.
#
#   scripts/postfix-anchor-shim.sh DIR    (after make build; DIR/bin gets this build's binaries)
#
# DIR/bin/pmgclusterd is bin/pmgclusterd. DIR/bin/pmgcm runs bin/pmgcm, except that
# join-cmd prints "pmgcm join MASTER --fingerprint FP" and keeps the token in DIR/token
# (mode 600), and join takes it from there in PMGCM_JOIN_TOKEN. Then, for example:
#
#   cd DIR && SRC=DIR RES=DIR/results.jsonl bash ../shared/anchors/postfix/run-anchor.sh matrix 3
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
src=$(cd "$(dirname "$0")/.." && pwd)
for b in pmgclusterd pmgcm; do
	[ -x "$src/bin/$b" ] || { echo "$src/bin/$b is missing: run make build first" >&2; exit 1; }
done
mkdir -p "$1/bin"
dir=$(cd "$1" && pwd)
cp -f "$src/bin/pmgclusterd" "$dir/bin/pmgclusterd"
cp -f "$src/bin/pmgcm" "$dir/bin/pmgcm.real"
cat >"$dir/bin/pmgcm" <<EOS
#!/usr/bin/env bash
# The Postfix anchor's pmgcm (scripts/postfix-anchor-shim.sh in the pmgcm tree).
set -euo pipefail
real=$dir/bin/pmgcm.real
tokfile=$dir/token
for a in "\$@"; do
	case \$a in
	join-cmd)
		json=\$("\$real" "\$@" -o json)
		(umask 077 && python3 -c 'import json,sys; print(json.load(sys.stdin)["token"], end="")' <<<"\$json" >"\$tokfile")
		python3 -c 'import json,sys; j=json.load(sys.stdin); print("pmgcm join %s --fingerprint %s" % (j["master"], j["fingerprint"]))' <<<"\$json"
		exit 0
		;;
	join)
		PMGCM_JOIN_TOKEN=\$(cat "\$tokfile")
		export PMGCM_JOIN_TOKEN
		break
		;;
	esac
done
exec "\$real" "\$@"
EOS
chmod +x "$dir/bin/pmgcm"
echo "$dir/bin: pmgclusterd and pmgcm for run-anchor.sh (SRC=$dir)"
