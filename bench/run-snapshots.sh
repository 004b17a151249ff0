#!/bin/bash
# Snapshots (issue 19), through the runtime (`pocketenv runtime`), busybox
# sandboxes with a disk limit (their layers on the layers filesystem):
#  1. a source sandbox with 100 MB and N small files written: time to
#     snapshot it while it runs, and how long it stayed frozen; against
#     `cp -a` of its writable layer (to the same btrfs and to the host's
#     ext4), the copy a snapshot replaces;
#  2. create+start of a sandbox from the image and from the snapshot,
#     interleaved round by round (median, p10, p90);
#  3. fork x10: ten sandboxes made and started from the snapshot, one after
#     the other and all at once, until all run;
#  4. disk: what btrfs charges to the snapshot and to each fork;
#  5. through the daemon: forkSandbox x10 of a sandbox with 100 MB written
#     until all ten are RUNNING, against ten createSandbox from the image.
set -euo pipefail
. "$(dirname "$0")/common.sh"

ROUNDS=20
FILES=2000
usage() {
    cat <<EOF
usage: bench/run-snapshots.sh [-r ROUNDS] [-n FILES]
  -r N   rounds of create+start from the image and from the snapshot (default 20)
  -n N   small files written in the source besides the 100 MB (default 2000)
Needs root and a build in \$BUILD (default build/).
EOF
}
while [ $# -gt 0 ]; do
    case $1 in
    -r) ROUNDS=$2; shift 2 ;;
    -n) FILES=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
    esac
done

bench_init snapshots
build_image
SNAPS=()
cleanup_snapshots() {
    local s n
    for n in $("$PE" --data "$DATA" runtime ls --json 2>/dev/null | jq -r '.[].name'); do
        "$PE" --data "$DATA" runtime rm "$n" >/dev/null 2>&1 || true
    done
    for s in "${SNAPS[@]}"; do
        "$PE" --data "$DATA" runtime snapshot-rm "$s" >/dev/null 2>&1 || true
    done
    rm -rf "${LAYERS:-/nonexistent}/bench-cp-$$"
}
on_cleanup cleanup_snapshots

pe() { "$PE" --data "$DATA" runtime "$@"; }
now_ns() { date +%s%N; }
ms_since() { echo "scale=1; ($(now_ns) - $1) / 1000000" | bc; }
# median p10 p90 of the numbers on stdin
stats() { sort -n | awk '{a[NR]=$1} END {printf "%.1f | %.1f | %.1f", a[int((NR+1)/2)], a[int(NR*0.1)+1], a[int(NR*0.9)]}'; }

OPTS=(--image "$ROOTFS" --net none --disk 1g)
pe create src "${OPTS[@]}" >/dev/null
pe start src >/dev/null
pe exec src -- sh -c "dd if=/dev/urandom of=/root/big bs=1M count=100 2>/dev/null &&
    mkdir -p /root/small && i=0 && while [ \$i -lt $FILES ]; do echo \$i > /root/small/f\$i; i=\$((i+1)); done"
LAYERS=${POCKETENV_LAYERS_DIR:-/var/lib/pocketenv/layers}
LAYER=$(pe inspect src --json | jq -r '.layer // empty')
[ -n "$LAYER" ] || LAYER=$(jq -r .layer "$DATA/sandboxes/src/state.json")
# A writer keeps running during the snapshots: the freeze is real.
pe exec src -- sh -c 'i=0; while :; do i=$((i+1)); echo $i > /root/counter; done' &
WRITER=$!

echo "## Snapshots: 100 MB + $FILES files in the source's layer"
echo
machine_info
echo
echo "| what | ms | frozen ms |"
echo "|---|---:|---:|"
for i in 1 2 3; do
    t=$(now_ns)
    out=$(pe snapshot src)
    echo "| snapshot of the running source ($i) | $(ms_since "$t") | $(echo "$out" | jq -r '.frozenMs | . * 10 | round / 10') |"
    SNAPS+=("$(echo "$out" | jq -r .id)")
done
SNAP=${SNAPS[0]}
EXCL=$(echo "$out" | jq -r .exclusiveBytes)
SIZE=$(echo "$out" | jq -r .sizeBytes)
kill "$WRITER" 2>/dev/null || true
wait "$WRITER" 2>/dev/null || true
pe stop src >/dev/null
sync -f "$LAYERS/$LAYER"
for how in never always; do
    t=$(now_ns)
    cp -a --reflink=$how "$LAYERS/$LAYER/upper" "$LAYERS/bench-cp-$$"
    sync -f "$LAYERS/bench-cp-$$"
    echo "| \`cp -a --reflink=$how\` of the layer, same btrfs, synced | $(ms_since "$t") | (stopped) |"
    rm -rf "$LAYERS/bench-cp-$$"
done
t=$(now_ns)
cp -a "$LAYERS/$LAYER/upper" cp-upper
sync -f cp-upper
echo "| \`cp -a\` of the layer to the host's ext4, synced | $(ms_since "$t") | (stopped) |"
rm -rf cp-upper
echo
echo "### create+start, $ROUNDS rounds interleaved"
echo
: >from-image
: >from-snap
for r in $(seq "$ROUNDS"); do
    t=$(now_ns)
    pe create "img$r" "${OPTS[@]}" >/dev/null && pe start "img$r" >/dev/null
    ms_since "$t" >>from-image
    t=$(now_ns)
    pe create-from "$SNAP" "snp$r" --net none --disk 1g >/dev/null && pe start "snp$r" >/dev/null
    ms_since "$t" >>from-snap
    pe rm "img$r" >/dev/null
    pe rm "snp$r" >/dev/null
done
echo "| from | median ms | p10 | p90 |"
echo "|---|---:|---:|---:|"
echo "| the image | $(stats <from-image) |"
echo "| the snapshot | $(stats <from-snap) |"
echo
echo "### fork x10 (create-from + start until all run)"
echo
t=$(now_ns)
for i in $(seq 10); do
    pe create-from "$SNAP" "seq$i" --net none --disk 1g >/dev/null && pe start "seq$i" >/dev/null
done
echo "- one after the other: $(ms_since "$t") ms"
t=$(now_ns)
for i in $(seq 10); do
    (pe create-from "$SNAP" "par$i" --net none --disk 1g >/dev/null && pe start "par$i" >/dev/null) &
done
wait
echo "- all at once: $(ms_since "$t") ms"
for i in $(seq 10); do
    [ "$(pe inspect "par$i" --json | jq -r .status)" = running ] || die "par$i is not running"
done
sync -f "$LAYERS"
btrfs filesystem sync "$LAYERS" >/dev/null 2>&1 || sleep 31 # qgroups count at a commit
used=$(for i in $(seq 10); do pe inspect "par$i" --json | jq -r '.disk.usedBytes'; done | stats)
echo
echo "### disk"
echo
echo "- the snapshot's files: $((SIZE / 1048576)) MiB; charged to the snapshot alone: $((EXCL / 1024)) KiB"
echo "- charged to each fork (median | p10 | p90 bytes): $used"

echo
echo "### through the daemon: ten sandboxes until all RUNNING"
echo
for f in pocketenv-serve pocketenv-client; do cp "$BUILD/$f" bin/; done
DDATA=$TMPD/ddata
TOKEN_FILE=$TMPD/token.json
cp -a "$DATA/images" "$DDATA.images"
mkdir -p "$DDATA" && mv "$DDATA.images" "$DDATA/images"
"$PE" --data "$DDATA" serve --listen 127.0.0.1:0 --token-file "$TOKEN_FILE" --rate-limit 0 \
    --sandbox-net none --idle-timeout 0 --user-sandboxes 100 2>"$TMPD/serve.log" &
DPID=$!
stop_daemon() {
    local id
    for id in $(api GET io.pocketenv.actor.getActorSandboxes "did=owner.local&limit=100" 2>/dev/null |
        jq -r '.sandboxes[].id'); do
        api POST io.pocketenv.sandbox.deleteSandbox "id=$id" '{}' >/dev/null 2>&1 || true
    done
    for id in $(api GET io.pocketenv.sandbox.getSnapshots "" 2>/dev/null | jq -r '.snapshots[].id'); do
        api POST io.pocketenv.sandbox.deleteSnapshot "id=$id" '{}' >/dev/null 2>&1 || true
    done
    kill "$DPID" 2>/dev/null && wait "$DPID" 2>/dev/null || true
}
on_cleanup stop_daemon
for ((i = 0; i < 100; i++)); do
    PORT=$(sed -n 's/.*event=listening addr=127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$TMPD/serve.log")
    [ -z "$PORT" ] || break
    kill -0 "$DPID" 2>/dev/null || die "the daemon exited: $(cat "$TMPD/serve.log")"
    sleep 0.1
done
[ -n "$PORT" ] || die "the daemon did not listen"
api() {
    local m=$1 nsid=$2 q=${3:-} body=${4:-} tok
    tok=$(jq -r .token "$TOKEN_FILE")
    if [ "$m" = POST ]; then
        curl -sS --fail-with-body -H "Authorization: Bearer $tok" -H 'Content-Type: application/json' \
            --data "$body" "http://127.0.0.1:$PORT/xrpc/$nsid?$q"
    else
        curl -sS --fail-with-body -H "Authorization: Bearer $tok" "http://127.0.0.1:$PORT/xrpc/$nsid?$q"
    fi
}
# until every id on stdin is RUNNING
wait_running() {
    local ids id n
    ids=$(cat)
    while :; do
        n=0
        for id in $ids; do
            [ "$(api GET io.pocketenv.sandbox.getSandbox "id=$id" | jq -r .sandbox.status)" = RUNNING ] ||
                n=$((n + 1))
        done
        [ $n = 0 ] && break
        sleep 0.02
    done
}
api POST io.pocketenv.sandbox.createSandbox "" '{"base":"busybox","name":"src"}' |
    jq -r .id | wait_running
api POST io.pocketenv.sandbox.exec "id=src" \
    '{"command":"dd if=/dev/urandom of=/root/big bs=1M count=100 2>/dev/null"}' >/dev/null
t=$(now_ns)
out=$(api POST io.pocketenv.sandbox.forkSandbox "id=src" '{"count":10}')
echo "- forkSandbox x10 answered (ten ids): $(ms_since "$t") ms, the source frozen $(echo "$out" | jq -r .frozenMs) ms"
echo "$out" | jq -r '.sandboxes[].id' | wait_running
echo "- ... all ten RUNNING: $(ms_since "$t") ms"
t=$(now_ns)
for i in $(seq 10); do
    api POST io.pocketenv.sandbox.createSandbox "" "{\"base\":\"busybox\",\"name\":\"img$i\"}" | jq -r .id
done | wait_running
echo "- ten createSandbox from the image, all RUNNING: $(ms_since "$t") ms"
