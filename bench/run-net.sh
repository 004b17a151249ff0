#!/bin/bash
# The cost of networking: start-to-exit of /bin/true with --net none vs
# --net nat (altbench, interleaved), and iperf3 throughput from a nat
# sandbox's network namespace through the NAT to an "upstream" namespace
# this script creates (10.123.0.4/30, test-only; nothing leaves the
# machine), next to host -> upstream without NAT.
#
# iperf3 is not in the busybox image, so the client runs from the host
# inside the sandbox's network namespace (nsenter --net): the same path
# (veth, bridge, nft, masquerade) that the sandbox's own traffic takes.
set -euo pipefail

ROUNDS=100
SECS=5
usage() {
    echo "usage: bench/run-net.sh [-r ROUNDS (100)] [-t IPERF_SECONDS (5)]"
    echo "Needs root, iperf3, iproute2, python3 and a build in \$BUILD (default build/)."
}
while getopts r:t:h o; do
    case $o in
    r) ROUNDS=$OPTARG ;;
    t) SECS=$OPTARG ;;
    *) usage; [ "$o" = h ] && exit 0 || exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "run-net.sh: needs root" >&2; exit 1; }
REPO=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-$REPO/build}
TMPD=$(mktemp -d /tmp/pe-bench-net.XXXXXX)
NS=pt-bench-$$
HIF=pt-bh-$$
NIF=pt-bn-$$
SRV=

cleanup() {
    set +e
    [ -n "$SRV" ] && kill "$SRV" 2>/dev/null && wait "$SRV" 2>/dev/null
    "$TMPD/pocketenv" --data "$TMPD/data" runtime rm netbench >/dev/null 2>&1
    ip link del "$HIF" 2>/dev/null
    ip netns del "$NS" 2>/dev/null
    rm -rf "$TMPD"
}
trap cleanup EXIT INT TERM HUP

# A snapshot of the binaries: a rebuild mid-run cannot mix versions.
cp "$BUILD/pocketenv" "$BUILD/pocketenv-init" "$BUILD/bench/altbench" "$TMPD/"
PE="$TMPD/pocketenv --data $TMPD/data"
$PE image build busybox >/dev/null

echo "== sandbox start: /bin/true, --net none vs --net nat ($ROUNDS rounds)"
"$TMPD/altbench" -r "$ROUNDS" -w 10 \
    "[none] $PE run --image busybox --net none -- /bin/true" \
    "[nat] $PE run --image busybox --net nat -- /bin/true"

echo
echo "== throughput through the NAT (iperf3, ${SECS}s, single stream)"
ip netns add "$NS"
ip link add "$HIF" type veth peer name "$NIF"
ip link set "$NIF" netns "$NS"
ip addr add 10.123.0.5/30 dev "$HIF"
ip link set "$HIF" up
ip -n "$NS" addr add 10.123.0.6/30 dev "$NIF"
ip -n "$NS" link set "$NIF" up
ip -n "$NS" link set lo up
ip netns exec "$NS" iperf3 -s -B 10.123.0.6 >/dev/null 2>&1 &
SRV=$!

$PE runtime create netbench --image busybox --net nat >/dev/null
$PE runtime start netbench >/dev/null
PID=$($PE runtime inspect netbench | python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])')

gbits() {
    python3 -c 'import json,sys; print("%.1f Gbit/s" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 1e9))'
}
# The server needs a moment to listen: retry the first connection briefly.
for i in $(seq 50); do
    iperf3 -c 10.123.0.6 -t 1 >/dev/null 2>&1 && break
    sleep 0.1
done
printf '%-34s %s\n' "host -> upstream (no NAT)" "$(iperf3 -c 10.123.0.6 -t "$SECS" -J | gbits)"
printf '%-34s %s\n' "nat sandbox -> upstream (NAT)" \
    "$(nsenter --net=/proc/"$PID"/ns/net iperf3 -c 10.123.0.6 -t "$SECS" -J | gbits)"
