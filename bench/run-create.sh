#!/bin/bash
# Create latency and create rate through the API (issue 21), without and
# with the warm pool, each next to a peer in the same run:
#   1. createSandbox -> first exec answered (build/bench/daemonbench create,
#      exec-retry and poll-getSandbox variants), interleaved with the peer
#      "bwrap start + nsenter exec": bwrap --unshare-all of /bin/sleep on
#      the same rootfs, then nsenter -a of /bin/true into it (bench/
#      create-peer.sh). Two daemons side by side: "plain" (no pool) and
#      "pool" (--pool BASE=P); per base: busybox, and with -t node the
#      node template (needs POCKETENV_IMAGES=DIR holding built busybox and
#      node images; not built here: it takes minutes).
#   2. the sustained create rate: -c creates (default 1000) through the API
#      with -j connections, until every one is RUNNING (bench/create-rate.py),
#      next to -c detached bwrap sandboxes started with the same concurrency.
#   3. leftovers after both daemons stopped: sandboxes in their data dirs,
#      processes in the id ranges they claimed, their cgroups, mounts below
#      the run's directory, id range claims: 0 expected.
# Issue 21 targets (printed, never asserted): create -> first exec p50 <=
# 3 ms; >= 300 creates/s sustained over 1000, 0 failures.
set -euo pipefail
. "$(dirname "$0")/common.sh"

usage() {
    cat <<EOF
usage: bench/run-create.sh [-n ROUNDS] [-c CREATES] [-j CONNS] [-P POOL] [-t TEMPLATE] [-o OUTDIR]
  -n N   create -> first exec: measured rounds per variant and daemon (default 40, +3 warm-up)
  -c N   creates for the rate (default 1000; 0 skips the rate)
  -j N   connections (API) and parallel starts (bwrap) for the rate (default 8)
  -P N   the pool daemon's --pool size per base (default 8)
  -t T   also time the template T (POCKETENV_IMAGES must hold it, its parents and busybox)
  -o DIR also write raw samples (CSV) to DIR
EOF
}

ROUNDS=40 CREATES=1000 CONNS=8 POOL=8 TEMPLATE="" OUTDIR=""
while [ $# -gt 0 ]; do
    case $1 in
    -n) ROUNDS=$2; shift 2 ;;
    -c) CREATES=$2; shift 2 ;;
    -j) CONNS=$2; shift 2 ;;
    -P) POOL=$2; shift 2 ;;
    -t) TEMPLATE=$2; shift 2 ;;
    -o) OUTDIR=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
    esac
done
if [ -n "$OUTDIR" ]; then
    mkdir -p "$OUTDIR" && OUTDIR=$(cd "$OUTDIR" && pwd)
fi
for t in bwrap nsenter jq python3; do
    command -v "$t" >/dev/null || die "$t is missing"
done
for f in pocketenv-serve bench/daemonbench; do
    [ -x "$BUILD/$f" ] || die "$BUILD/$f missing: run 'ninja -C $BUILD'"
done
[ -z "$TEMPLATE" ] || [ -d "${POCKETENV_IMAGES:-/nonexistent}/$TEMPLATE" ] ||
    die "-t $TEMPLATE: set POCKETENV_IMAGES to a directory with the built $TEMPLATE and busybox images"

HERE=$(cd "$(dirname "$0")" && pwd)
bench_init create
cp "$BUILD/pocketenv-serve" "$BUILD/bench/daemonbench" "$HERE/create-rate.py" "$HERE/create-peer.sh" bin/
DB=bin/daemonbench
declare -A DPID PORT
DATA_DIRS=()
IDMAP_DIR=${POCKETENV_IDMAP_DIR:-/var/lib/pocketenv/idmap}

stop_daemon() {
    local p=${DPID[$1]:-} i
    [ -n "$p" ] || return 0
    kill -TERM "$p" 2>/dev/null || true
    for ((i = 0; i < 300; i++)); do
        kill -0 "$p" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$p" 2>/dev/null && { echo "${0##*/}: daemon $1 still running after 30 s: SIGKILL" >&2; kill -KILL "$p"; }
    wait "$p" 2>/dev/null || true
    DPID[$1]=""
}

# Sandboxes outlive a killed daemon: remove what is left with the CLI.
cleanup_create() {
    local d name k
    for k in "${!DPID[@]}"; do stop_daemon "$k"; done
    for d in "${DATA_DIRS[@]}"; do
        for name in $("$TMPD/bin/pocketenv" --data "$d" runtime ls --json 2>/dev/null | jq -r '.[].name'); do
            "$TMPD/bin/pocketenv" --data "$d" runtime rm "$name" >/dev/null ||
                echo "${0##*/}: could not remove sandbox $name of $d" >&2
        done
    done
}
on_cleanup cleanup_create

# start_daemon KEY [SERVE OPTIONS...]
start_daemon() {
    local k=$1 dir=$TMPD/data-$1 i p=""
    shift
    DATA_DIRS+=("$dir")
    if [ -z "${POCKETENV_IMAGES:-}" ]; then
        "$PE" --data "$dir" image build busybox >/dev/null || die "image build busybox failed"
    fi
    "$PE" --data "$dir" serve --listen 127.0.0.1:0 --token-file "$TMPD/token-$k.json" --rate-limit 0 \
        --sandbox-net none --idle-timeout 0 "$@" 2>"$TMPD/serve-$k.log" &
    DPID[$k]=$!
    for ((i = 0; i < 100; i++)); do
        p=$(sed -n 's/.*event=listening addr=127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$TMPD/serve-$k.log")
        [ -z "$p" ] || break
        kill -0 "${DPID[$k]}" 2>/dev/null || { cat "$TMPD/serve-$k.log" >&2; die "daemon $k exited"; }
        sleep 0.1
    done
    [ -n "$p" ] || die "daemon $k did not listen within 10 s"
    PORT[$k]=$p
}

metric() { # metric KEY NAME: a pool counter of daemon KEY (sum over bases)
    curl -s -H "Authorization: Bearer $(jq -r .token "$TMPD/token-$1.json")" \
        "http://127.0.0.1:${PORT[$1]}/metrics" | awk -v n="$2" 'index($0, n) == 1 { s += $NF } END { print s + 0 }'
}

wait_pool_full() {
    local want=$2 i
    for ((i = 0; i < 600; i++)); do
        [ "$(metric "$1" 'pocketenv_pool_ready{')" -ge "$want" ] && return 0
        sleep 0.1
    done
    echo "${0##*/}: the pool of $1 did not fill within 60 s" >&2
}

IMAGES=${POCKETENV_IMAGES:-$TMPD/data-plain/images}
BASES=(busybox)
[ -z "$TEMPLATE" ] || BASES+=("$TEMPLATE")
pool_spec=$(IFS=,; echo "${BASES[*]/%/=$POOL}")
cgroups_before=$( (ls -d /sys/fs/cgroup/*/pocketenv/pocketenv-* 2>/dev/null || true) | wc -l)
run_files_before=$(run_dir_files)
start_daemon plain
start_daemon pool --pool "$pool_spec"

echo "## Create latency and rate (issue 21)"
echo
machine_info
echo "- daemons: \`pocketenv serve --rate-limit 0 --idle-timeout 0 --sandbox-net none\` (\"plain\"),"
echo "  and the same with \`--pool $pool_spec\` (\"pool\"); pocketenv-serve sha256 $(sha256sum bin/pocketenv-serve | cut -c1-12)"
echo "- images: ${POCKETENV_IMAGES:-built in each data dir}; peer: \`bwrap --unshare-all --die-with-parent\` of"
echo "  /bin/sleep on the same rootfs, then \`nsenter -a -t <its pid> /bin/true\` (bench/create-peer.sh)"
echo

for base in "${BASES[@]}"; do
    # A template's image is its own layer over its parents' (gemini over
    # node over debian). bwrap has no overlay: the peer runs on the bottom
    # root with the Node.js layer's /usr/local bound over it, the runtime
    # the template stands on, without the template's own (npm) layer.
    chain=("$base")
    while p=$(jq -r '.parent // empty' "$IMAGES/${chain[-1]}/image.json") && [ -n "$p" ]; do
        chain+=("$p")
    done
    peer_args="$IMAGES/${chain[-1]}/rootfs"
    for ((i = ${#chain[@]} - 2; i >= 0; i--)); do
        if [ -d "$IMAGES/${chain[$i]}/rootfs/usr/local/bin" ]; then
            peer_args+=" --ro-bind $IMAGES/${chain[$i]}/rootfs/usr/local /usr/local"
            break
        fi
    done
    echo "[bwrap start + nsenter exec] bin/create-peer.sh $peer_args" >"peer-$base"
    for k in plain pool; do
        [ "$k" = plain ] || wait_pool_full pool "$POOL"
        c0=$( [ "$k" = pool ] && metric pool 'pocketenv_pool_events_total{base="'"$base"'",event="claimed"}' || echo 0)
        echo "### $base, daemon \"$k\""
        echo
        "$DB" -p "${PORT[$k]}" -T "$TMPD/token-$k.json" create -r "$ROUNDS" -w 3 -B "$base" \
            -f "peer-$base" -b "bwrap start + nsenter exec" \
            ${OUTDIR:+-o "$OUTDIR/create-$base-$k.csv"}
        if [ "$k" = pool ]; then
            c1=$(metric pool 'pocketenv_pool_events_total{base="'"$base"'",event="claimed"}')
            echo
            echo "creates served from the pool: $((c1 - c0)) of $((2 * (ROUNDS + 3)))"
        fi
        echo
    done
done

if [ "$CREATES" -gt 0 ]; then
    echo "### Sustained create rate: $CREATES creates, $CONNS at a time, until all RUNNING"
    echo
    echo "| who | creates/s | wall s | failures | answered RUNNING (pool) | deletes/s |"
    echo "|---|---:|---:|---:|---:|---:|"
    wait_pool_full pool "$POOL"
    for k in plain pool; do
        python3 bin/create-rate.py api "${PORT[$k]}" "$TMPD/token-$k.json" "$CREATES" "$CONNS" busybox |
            jq -r --arg k "API, daemon $k" '"| \($k) | \(.per_s*10|round/10) | \(.wall_s*100|round/100) | \(.failures) \(.first_failures|join("; ")) | \(.answered_running) | \(.delete_per_s*10|round/10) |"'
    done
    python3 bin/create-rate.py bwrap "$IMAGES/busybox/rootfs" "$CREATES" "$CONNS" |
        jq -r '"| bwrap (detached sleep) | \(.per_s*10|round/10) | \(.wall_s*100|round/100) | \(.failures) | - | - |"'
    echo
fi

# ---- leftovers ----------------------------------------------------------
for k in plain pool; do stop_daemon "$k"; done
left_sbx=0 left_claims=0 left_procs=0
for d in "${DATA_DIRS[@]}"; do
    left_sbx=$((left_sbx + $("$PE" --data "$d" runtime ls --json | jq length)))
    real=$(realpath "$d")
    for f in "$IDMAP_DIR"/*; do
        [ -f "$f" ] && [ "$(head -1 "$f" 2>/dev/null)" = "$real" ] && left_claims=$((left_claims + 1))
    done
done
for ((i = 0; i < 50; i++)); do # exited inits may stay zombies a moment
    left_procs=$(ps -eo args= | grep -c "^pocketenv-init .*$TMPD" || true)
    [ "$left_procs" -eq 0 ] && break
    sleep 0.2
done
cgroups_after=$( (ls -d /sys/fs/cgroup/*/pocketenv/pocketenv-* 2>/dev/null || true) | wc -l)
echo "Leftovers after both daemons stopped (SIGTERM):"
echo "- sandboxes in their data dirs: $left_sbx"
echo "- id range claims of their data dirs ($IDMAP_DIR): $left_claims"
echo "- processes of their sandboxes (pocketenv-init of this run): $left_procs"
echo "- mounts below the run's directory: $(grep -c " ${TMPD}[/ ]" /proc/self/mountinfo || true)"
echo "- files in the run directory (/run/pocketenv/sandboxes) before / after (other engineers' sandboxes count too): $run_files_before / $(run_dir_files)"
echo "- pocketenv cgroup dirs on the host before / after (other engineers' sandboxes count too):" \
    "$cgroups_before / $cgroups_after"
