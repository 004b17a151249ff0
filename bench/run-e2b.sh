#!/bin/bash
# The E2B API (issue 16): E2B's own SDK (`e2b` from npm, pinned in
# package.json) against `pocketenv serve` on a free 127.0.0.1 port with its
# own data dir: Sandbox.create() -> first commands.run('true') -> kill, N
# rounds (after 2 warm-up rounds), one template. Prints the median, p10 and
# p90 of create -> first run in ms; nothing is asserted (STYLE rule 21).
# -i: the code interpreter instead (@e2b/code-interpreter on the python
# template; POCKETENV_IMAGES may name images that hold it, else it is built
# first, which takes minutes): create -> first runCode('1') once, then
# runCode of a small cell in that warm context, N rounds.
# The SDK is configured only by E2B_API_URL, E2B_SANDBOX_URL, E2B_API_KEY.
# An EXIT trap stops the daemon and removes its data dir.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-$ROOT/build}
N=20
TEMPLATE=busybox
INTERP=
while getopts "n:t:i" o; do
    case $o in
    n) N=$OPTARG ;;
    t) TEMPLATE=$OPTARG ;;
    i) INTERP=1 TEMPLATE=python ;;
    *) echo "usage: bench/run-e2b.sh [-n ROUNDS] [-t TEMPLATE] [-i]" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
[ -f "$ROOT/node_modules/e2b/package.json" ] || { echo "npm ci first (e2b)" >&2; exit 1; }
TMPD=$(mktemp -d /var/tmp/pocketenv-bench-e2b.XXXXXX)
PID=
cleanup() {
    [ -n "$PID" ] && kill -TERM "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
    rm -rf "$TMPD"
}
trap cleanup EXIT
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
IMAGES=${POCKETENV_IMAGES:-$TMPD/data/images}
for img in busybox ${INTERP:+python}; do
    [ -e "$IMAGES/$img/image.json" ] || "$BUILD/pocketenv" --data "$TMPD/data" image build "$img" >/dev/null
done
"$BUILD/pocketenv" serve --listen "127.0.0.1:$PORT" --data "$TMPD/data" --idle-timeout 0 \
    --rate-limit 0 --token-file "$TMPD/token.json" 2>"$TMPD/daemon.log" &
PID=$!
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && [ -s "$TMPD/token.json" ] && break
    sleep 0.1
done
KEY=$("$BUILD/pocketenv" --data "$TMPD/data" token create --e2b)
export E2B_API_URL=http://127.0.0.1:$PORT E2B_SANDBOX_URL=http://127.0.0.1:$PORT E2B_API_KEY=$KEY
if [ -n "$INTERP" ]; then
    E2B_BENCH_N=$N node "$ROOT/tests/e2b/drive.mjs" interpBench python | python3 -c '
import json, statistics, sys
o = json.load(sys.stdin)
ms, first = sorted(o["ms"]), o["first"]
q = lambda p: ms[min(len(ms) - 1, int(p * len(ms)))]
print(f"@e2b/code-interpreter Sandbox.create -> first runCode (python): {first:.0f} ms")
print(f"runCode in a warm context (n={len(ms)}): median {statistics.median(ms):.1f} ms, "
      f"p10 {q(0.1):.1f} ms, p90 {q(0.9):.1f} ms")'
    echo "commit $(git -C "$ROOT" rev-parse --short HEAD), $(nproc) CPUs, $(uname -r)"
    exit 0
fi
E2B_BENCH_N=2 node "$ROOT/tests/e2b/drive.mjs" bench "$TEMPLATE" >/dev/null
E2B_BENCH_N=$N node "$ROOT/tests/e2b/drive.mjs" bench "$TEMPLATE" | python3 -c '
import json, statistics, sys
ms = sorted(json.load(sys.stdin)["ms"])
q = lambda p: ms[min(len(ms) - 1, int(p * len(ms)))]
print(f"e2b SDK Sandbox.create -> first commands.run ('"$TEMPLATE"', n={len(ms)}): "
      f"median {statistics.median(ms):.1f} ms, p10 {q(0.1):.1f} ms, p90 {q(0.9):.1f} ms")'
echo "commit $(git -C "$ROOT" rev-parse --short HEAD), $(nproc) CPUs, $(uname -r)"
