#!/bin/bash
# Density: start N idle persistent sandboxes (runtime create + start,
# busybox image, default options), measure what they cost the host
# (/proc/meminfo deltas after MemAvailable has settled, plus what their
# memory cgroups were charged), report MiB per sandbox and the start rate,
# then remove them all (runtime rm) and check that nothing is left: no
# process in any of their uid ranges, no cgroup, no mount. Issue 2 target:
# <= 1 MiB per sandbox. Prints figures, never judges.
#
# Everything lives in a temporary data dir; the EXIT trap removes every
# sandbox still there (also after ^C), and as a last resort kills, by pid,
# processes that are still running in the uid ranges of the sandboxes this
# run started.
set -euo pipefail
. "$(dirname "$0")/common.sh"

usage() {
    cat <<EOF
usage: bench/run-density.sh [-n N] [--deadline S] [--api [-j CONNS]]
  -n N          sandboxes to start (default 1000; 100 for a quick run)
  --api         create and delete them through \`pocketenv serve\` (createSandbox until
                RUNNING, CONNS at a time, default 8; bench/create-rate.py), not the CLI
  --deadline S  give up waiting for MemAvailable to settle after S s (default 60)
Needs root and a build in \$BUILD (default build/).
EOF
}

N=1000
DEADLINE=60
API=0 CONNS=8
while [ $# -gt 0 ]; do
    case $1 in
    -n) N=$2; shift 2 ;;
    --api) API=1; shift ;;
    -j) CONNS=$2; shift 2 ;;
    --deadline) DEADLINE=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
    esac
done
[[ $N =~ ^[1-9][0-9]*$ ]] || die "-n wants a positive number"
[[ $DEADLINE =~ ^[1-9][0-9]*$ ]] || die "--deadline wants a positive number of seconds"

HERE=$(cd "$(dirname "$0")" && pwd)
bench_init density

# ---- cleanup ------------------------------------------------------------

# Every sandbox this run started: "id pid idBase", one per line.
SBX_FILE=$TMPD/sandboxes.txt
: >"$SBX_FILE"

# Processes (pid uid stat) whose uid lies in the range of one of our
# sandboxes (idBase is 65536-aligned, each sandbox owns 65536 ids).
our_procs() {
    ps -eo pid=,uid=,stat= | awk -v f="$SBX_FILE" '
        # keys via %.0f: mawk would turn numbers >= 2^31 into "2.3e+09"
        BEGIN { while ((getline l < f) > 0) { split(l, a, " "); base[sprintf("%.0f", a[3])] = 1 } }
        { u = $2 < 0 ? $2 + 4294967296 : $2      # procps prints uids >= 2^31 as negative
          b = sprintf("%.0f", u - (u % 65536)); if (b in base) printf "%s %.0f %s\n", $1, u, $3 }'
}

# Live processes with uid >= 0x10000000 on the whole host (any sandbox).
high_uid_procs() {
    ps -eo uid=,stat= | awk '{ u = $1 < 0 ? $1 + 4294967296 : $1 } u >= 268435456 && $2 !~ /^Z/' | wc -l
}

remove_all() {
    local names
    names=$("$TMPD/bin/pocketenv" --data "$TMPD/data" runtime ls --json 2>/dev/null | jq -r '.[].name' 2>/dev/null) || true
    for n in $names; do
        "$TMPD/bin/pocketenv" --data "$TMPD/data" runtime rm "$n" >/dev/null 2>&1 ||
            echo "${0##*/}: runtime rm $n failed" >&2
    done
}

cleanup_density() {
    local left=()
    remove_all
    mapfile -t left < <(our_procs | awk '$3 !~ /^Z/ { print $1 }')
    if [ ${#left[@]} -gt 0 ]; then
        echo "${0##*/}: killing leftover sandbox processes: ${left[*]}" >&2
        kill -9 "${left[@]}" 2>/dev/null || true
    fi
    "$TMPD/bin/pocketenv" --data "$TMPD/data" runtime gc >/dev/null 2>&1 || true
}
on_cleanup cleanup_density

# ---- measuring ----------------------------------------------------------

meminfo() {
    awk -v k="$1:" '$1 == k { print $2 }' /proc/meminfo
}

FIELDS=(MemAvailable MemFree Slab SUnreclaim KernelStack PageTables Percpu Shmem Cached)

# Wait until MemAvailable stops changing: sampled every 0.5 s, settled when
# the last 6 samples (3 s) lie within 2 MiB of each other; gives up after
# $DEADLINE s. Then snapshots FIELDS into the array named by $1.
# Sets SETTLE_NOTE.
settle_and_snapshot() {
    local -n snap=$1
    local w=() start=$SECONDS lo hi f
    while :; do
        w+=("$(meminfo MemAvailable)")
        [ ${#w[@]} -le 6 ] || w=("${w[@]:1}")
        if [ ${#w[@]} -eq 6 ]; then
            lo=$(printf '%s\n' "${w[@]}" | sort -n | head -1)
            hi=$(printf '%s\n' "${w[@]}" | sort -n | tail -1)
            if [ $((hi - lo)) -le 2048 ]; then
                SETTLE_NOTE="settled after $((SECONDS - start)) s (6 samples within $(((hi - lo) / 1024)) MiB)"
                break
            fi
        fi
        if [ $((SECONDS - start)) -ge "$DEADLINE" ]; then
            SETTLE_NOTE="did NOT settle within $DEADLINE s (last 3 s spread $(((hi - lo) / 1024)) MiB); using the last sample"
            break
        fi
        sleep 0.5
    done
    for f in "${FIELDS[@]}"; do
        # shellcheck disable=SC2034 # snap is a nameref to the caller's array
        snap["$f"]=$(meminfo "$f")
    done
}

# Sum of a memory cgroup file over our sandboxes, in kB.
memcg_sum_kb() {
    local file=$1 id sum=0 v
    while read -r id _; do
        v=$(cat "/sys/fs/cgroup/memory/pocketenv/pocketenv-$id/$file" 2>/dev/null) || continue
        sum=$((sum + v))
    done <"$SBX_FILE"
    echo $((sum / 1024))
}

# Objects in use in the kernel's kmalloc-1k cache: where each memory
# cgroup's per-shrinker table goes (bench/README.md, 5,000 sandboxes).
kmalloc1k() {
    awk '$1 == "kmalloc-1k" { print $2 }' /proc/slabinfo
}

# Superblocks a sandbox's mounts use that the host's do not: what its
# mounts add to the kernel's shrinker count. $1: its init's pid.
own_superblocks() {
    comm -23 <(awk '{ print $3 }' "/proc/$1/mountinfo" | sort -u) \
        <(awk '{ print $3 }' /proc/self/mountinfo | sort -u) | wc -l
}

# Memory cgroups the kernel still counts, removed-but-dying ones included.
memcg_count() {
    awk '$1 == "memory" { print $3 }' /proc/cgroups
}

now() { echo "$EPOCHREALTIME"; }
elapsed() { echo "$2 - $1" | bc -l; }

build_image
# Warm-up: three sandboxes through their whole life, so one-time costs
# (pocketenv's parent cgroups, caches of the binaries) are not counted.
for i in 1 2 3; do
    "$PE" --data "$DATA" runtime create "pebench-warm-$i" --image busybox >/dev/null
    "$PE" --data "$DATA" runtime start "pebench-warm-$i" >/dev/null
    "$PE" --data "$DATA" runtime rm "pebench-warm-$i" >/dev/null
done

# --api: the daemon, on the same data dir. Its open files grow with the
# sandboxes (a pidfd per init, the store): raised for this run only.
DPID="" PORT=""
if [ "$API" = 1 ]; then
    [ -x "$BUILD/pocketenv-serve" ] || die "$BUILD/pocketenv-serve missing"
    cp "$BUILD/pocketenv-serve" "$HERE/create-rate.py" bin/
    ulimit -n "$(ulimit -Hn)" # the hard limit: what this shell may take
    "$PE" --data "$DATA" serve --listen 127.0.0.1:0 --token-file "$TMPD/token.json" --rate-limit 0 \
        --sandbox-net none --idle-timeout 0 2>"$TMPD/serve.log" &
    DPID=$!
    for ((k = 0; k < 100; k++)); do
        PORT=$(sed -n 's/.*event=listening addr=127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$TMPD/serve.log")
        [ -z "$PORT" ] || break
        sleep 0.1
    done
    [ -n "$PORT" ] || die "the daemon did not listen: $(cat "$TMPD/serve.log")"
    stop_daemon() {
        [ -n "$DPID" ] || return 0
        kill -TERM "$DPID" 2>/dev/null || true
        wait "$DPID" 2>/dev/null || true
        DPID=""
    }
    on_cleanup stop_daemon # runs before cleanup_density's rm (last registered first)
fi

echo "## Density: $N idle persistent sandboxes"
echo
machine_info
if [ "$API" = 1 ]; then
    echo "- sandboxes: \`createSandbox {\"base\":\"busybox\"}\` through \`pocketenv serve --sandbox-net none"
    echo "  --idle-timeout 0\`, $CONNS connections, each until RUNNING; deleted with deleteSandbox"
    echo "- limits: open files of the daemon $(ulimit -n) (raised for this run); kernel.pid_max" \
        "$(cat /proc/sys/kernel/pid_max), user.max_user_namespaces $(cat /proc/sys/user/max_user_namespaces)," \
        "fs.inotify.max_user_instances $(cat /proc/sys/fs/inotify/max_user_instances) (not changed)"
else
    echo "- sandboxes: \`runtime create pebench-I --image busybox\` + \`runtime start pebench-I\`, one after the other"
fi
echo

declare -A before after gone
others_before=$(high_uid_procs)
run_files_before=$(run_dir_files)
settle_and_snapshot before
memcgs_before=$(memcg_count)
k1k_before=$(kmalloc1k)
echo "- before: MemAvailable $((before[MemAvailable] / 1024)) MiB, $SETTLE_NOTE"

t_create=0 t_start=0
t0=$(now)
if [ "$API" = 1 ]; then
    python3 bin/create-rate.py keep "$PORT" "$TMPD/token.json" "$N" "$CONNS" busybox "$TMPD/ids.txt" \
        >"$TMPD/create.json"
    echo "- API creates: $(cat "$TMPD/create.json")"
fi
for ((i = 1; API == 0 && i <= N; i++)); do
    a=$(now)
    "$PE" --data "$DATA" runtime create "pebench-$i" --image busybox >/dev/null
    b=$(now)
    "$PE" --data "$DATA" runtime start "pebench-$i" >/dev/null
    c=$(now)
    t_create=$(echo "$t_create + $b - $a" | bc -l)
    t_start=$(echo "$t_start + $c - $b" | bc -l)
    if ((i % 100 == 0)); then echo "  started $i" >&2; fi
done
t1=$(now)
"$PE" --data "$DATA" runtime ls --json | jq -r '.[] | "\(.id) \(.pid) \(.idBase) \(.status)"' >"$SBX_FILE"
running=$(awk '$4 == "running"' "$SBX_FILE" | wc -l)
procs=$(our_procs | awk '$3 !~ /^Z/' | wc -l)

settle_and_snapshot after
echo "- after starting: MemAvailable $((after[MemAvailable] / 1024)) MiB, $SETTLE_NOTE"
memcgs_after=$(memcg_count)
k1k_after=$(kmalloc1k)
first_pid=$(awk '$4 == "running" { print $2; exit }' "$SBX_FILE")
sbs=$(own_superblocks "$first_pid" 2>/dev/null || echo "?")
memcg=$(memcg_sum_kb memory.usage_in_bytes)
kmem=$(memcg_sum_kb memory.kmem.usage_in_bytes)
disk=$(du -sk "$DATA/sandboxes" | cut -f1)

total=$(elapsed "$t0" "$t1")
echo
echo "| figure | value |"
echo "|---|---:|"
echo "| sandboxes running / processes in their uid ranges | $running / $procs |"
printf '| create + start, wall | %.1f s (%.0f sandboxes/s) |\n' "$total" "$(echo "$N / $total" | bc -l)"
[ "$API" = 1 ] || printf '| per sandbox: create / start (mean) | %.2f / %.2f ms |\n' \
    "$(echo "$t_create * 1000 / $N" | bc -l)" "$(echo "$t_start * 1000 / $N" | bc -l)"
[ "$API" = 0 ] || printf '| the daemon: VmRSS | %s |\n' "$(awk '/^VmRSS/ { printf "%.1f MiB", $2 / 1024 }' /proc/$DPID/status)"
for f in "${FIELDS[@]}"; do
    case $f in
    MemAvailable | MemFree) d=$((before[$f] - after[$f])) label="$f drop" ;;
    *) d=$((after[$f] - before[$f])) label="$f growth" ;;
    esac
    per=$(printf '%.3f MiB per sandbox' "$(echo "$d / 1024 / $N" | bc -l)")
    [ "$f" != MemAvailable ] || label="**$label**" per="**$per**"
    printf '| %s | %.1f MiB total, %s |\n' "$label" "$(echo "$d / 1024" | bc -l)" "$per"
done
kest=0
for f in Slab KernelStack PageTables Percpu Shmem; do
    kest=$((kest + after[$f] - before[$f]))
done
printf '| Slab + KernelStack + PageTables + Percpu + Shmem (less noisy than MemAvailable) | %.3f MiB per sandbox |\n' \
    "$(echo "$kest / 1024 / $N" | bc -l)"
printf '| charged to the sandboxes'"'"' memory cgroups (of which kmem) | %.3f (%.3f) MiB per sandbox |\n' \
    "$(echo "$memcg / 1024 / $N" | bc -l)" "$(echo "$kmem / 1024 / $N" | bc -l)"
printf '| kmalloc-1k objects (memory cgroups'"'"' shrinker tables) | %+d total, %.0f per sandbox |\n' \
    "$((k1k_after - k1k_before))" "$(echo "($k1k_after - $k1k_before) / $N" | bc -l)"
echo "| superblocks of a sandbox's own (not the host's) | $sbs |"
printf '| data dir (sandboxes/) on disk | %.1f KiB per sandbox |\n' "$(echo "$disk / $N" | bc -l)"

# ---- teardown and leftovers ---------------------------------------------

t0=$(now)
if [ "$API" = 1 ]; then
    python3 bin/create-rate.py delete "$PORT" "$TMPD/token.json" "$CONNS" "$TMPD/ids.txt" >"$TMPD/delete.json"
    echo "- API deletes: $(cat "$TMPD/delete.json")"
    stop_daemon
fi
for ((i = 1; API == 0 && i <= N; i++)); do
    "$PE" --data "$DATA" runtime rm "pebench-$i" >/dev/null
done
t1=$(now)
total=$(elapsed "$t0" "$t1")
printf '| rm of all (runtime rm, or deleteSandbox with --api), wall | %.1f s (%.0f sandboxes/s) |\n' "$total" "$(echo "$N / $total" | bc -l)"

# Exited inits may stay zombies for a moment until the host's PID 1 reaps
# them: wait for that (bounded) before calling anything a leftover.
for ((k = 0; k < 50; k++)); do
    [ -z "$(our_procs)" ] && break
    sleep 0.2
done
left_live=$(our_procs | awk '$3 !~ /^Z/' | wc -l)
left_zombie=$(our_procs | awk '$3 ~ /^Z/' | wc -l)
left_cg=0
while read -r id _; do
    for d in /sys/fs/cgroup/*/pocketenv/pocketenv-"$id"; do
        [ -e "$d" ] && left_cg=$((left_cg + 1))
    done
done <"$SBX_FILE"
foreign_cg=0
for d in /sys/fs/cgroup/*/pocketenv/pocketenv-*; do
    case ${d##*/} in pocketenv-test* | 'pocketenv-*') ;; *) foreign_cg=$((foreign_cg + 1)) ;; esac
done
others_after=$(high_uid_procs)
left_mounts=$(grep -c " ${TMPD}[/ ]" /proc/self/mountinfo || true)
left_sbx=$("$PE" --data "$DATA" runtime ls --json | jq length)
settle_and_snapshot gone
memcgs_gone=$(memcg_count)
printf '| after rm: MemAvailable | %d MiB, %+d MiB vs before the start (%s) |\n' \
    "$((gone[MemAvailable] / 1024))" "$(((gone[MemAvailable] - before[MemAvailable]) / 1024))" "$SETTLE_NOTE"
echo "| memory cgroups on the host (/proc/cgroups, dying ones included): before / running / after rm | $memcgs_before / $memcgs_after / $memcgs_gone |"
echo
echo "Leftovers after removing all $N:"
echo "- sandboxes in the data dir: $left_sbx"
echo "- processes in their uid ranges: $left_live running, $left_zombie zombie(s) not yet reaped"
echo "- their cgroups (/sys/fs/cgroup/*/pocketenv/pocketenv-<id>): $left_cg"
echo "- mounts below the run's temporary directory: $left_mounts"
echo "- files in the run directory (/run/pocketenv/sandboxes) before / after (other users' sandboxes count too): $run_files_before / $(run_dir_files)"
echo "- host-wide, for context (other users' sandboxes count too): live processes with uid >= 0x10000000:" \
    "$others_before before, $others_after after; pocketenv-* cgroup dirs not named pocketenv-test*: $foreign_cg"
