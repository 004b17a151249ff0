#!/bin/bash
# Two builds of the daemon side by side (issue 21): the same requests to
# each, alternating, so that both see the same load of this shared host.
#   bench/run-ab.sh -b BASE_BIN_DIR [-k ROUNDS] [-d WRK_SECONDS] [-c CONNS] [-e EXEC_ROUNDS]
#                   [-P POOL] [-C CREATE_ROUNDS] [-N CHURN] [-o ONESHOT_ROUNDS]
# (-d 0: no wrk runs)
# BASE_BIN_DIR holds pocketenv, pocketenv-serve and pocketenv-init of the
# build to compare with (e.g. copied from an earlier run-daemon.sh); the
# other build is $BUILD (default build/). Each daemon gets its own data dir
# and one busybox sandbox made through its API. Per round, in a shuffled
# order: wrk on getSandbox and on getPublicKey (the HTTP + XRPC floor,
# answered on the loop thread) against each daemon; then, with -e N,
# daemonbench exec (N rounds) against each, next to `nsenter -a` into the
# same sandbox's init (the ratio is to it); with -C N, daemonbench create
# (N rounds: createSandbox -> first exec answered) against each, with the
# daemon's CPU per create; with -N M, each daemon first makes, execs in and
# deletes M sandboxes through the API (untimed: a long-lived daemon's
# history). -P N starts both daemons with --pool busybox=N
# and waits until both pools are full. With -o N, per round one altbench
# run (N rounds) of each build's one-shot `pocketenv run -- /bin/true` beside
# bwrap on the same rootfs, interleaved (the ratio is to bwrap; the daemons
# stay idle meanwhile), then the CPU each run took (bench/cpu-per-run.py, with
# --perf where perf is installed). Prints one line per run;
# nothing is asserted. An EXIT trap stops both daemons and removes their
# sandboxes and the directory.
set -euo pipefail
. "$(dirname "$0")/common.sh"

BASE="" ROUNDS=3 WRK_SECONDS=5 CONNS=64 EXEC_ROUNDS=0 POOL=0 CREATE_ROUNDS=0 ONESHOT_ROUNDS=0
CHURN=0
while [ $# -gt 0 ]; do
    case $1 in
    -b) BASE=$(cd "$2" && pwd); shift 2 ;;
    -k) ROUNDS=$2; shift 2 ;;
    -d) WRK_SECONDS=$2; shift 2 ;;
    -c) CONNS=$2; shift 2 ;;
    -e) EXEC_ROUNDS=$2; shift 2 ;;
    -P) POOL=$2; shift 2 ;;
    -C) CREATE_ROUNDS=$2; shift 2 ;;
    -N) CHURN=$2; shift 2 ;;
    -o) ONESHOT_ROUNDS=$2; shift 2 ;;
    *) sed -n '2,24p' "$0" >&2; exit 2 ;;
    esac
done
[ -n "$BASE" ] || die "-b BASE_BIN_DIR is required"
for t in wrk jq curl; do command -v "$t" >/dev/null || die "$t is missing"; done

bench_init ab
mkdir -p base new
cp "$BASE/pocketenv" "$BASE/pocketenv-serve" "$BASE/pocketenv-init" base/
cp "$BUILD/pocketenv" "$BUILD/pocketenv-serve" "$BUILD/pocketenv-init" new/
cp "$BUILD/bench/daemonbench" "$BUILD/bench/altbench" bin/
declare -A PID PORTN TOK SBX

cleanup_ab() {
    local v i n
    # AB_LOGS=DIR keeps both daemons' logs (e.g. for temporary probes)
    [ -z "${AB_LOGS:-}" ] || cp serve-*.log "$AB_LOGS"/ 2>/dev/null || true
    for v in base new; do
        [ -n "${PID[$v]:-}" ] || continue
        kill -TERM "${PID[$v]}" 2>/dev/null || true
        for ((i = 0; i < 150; i++)); do kill -0 "${PID[$v]}" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "${PID[$v]}" 2>/dev/null || true
        for n in $("$v/pocketenv" --data "data-$v" runtime ls --json 2>/dev/null | jq -r '.[].name'); do
            "$v/pocketenv" --data "data-$v" runtime rm "$n" >/dev/null || true
        done
    done
}
on_cleanup cleanup_ab

api() { # VARIANT METHOD NSID [QUERY] [BODY]
    local v=$1 m=$2 nsid=$3 q=${4:-} body=${5:-}
    curl -sS --fail-with-body -H "Authorization: Bearer ${TOK[$v]}" ${body:+-H 'Content-Type: application/json' -d "$body"} \
        -X "$m" "http://127.0.0.1:${PORTN[$v]}/xrpc/$nsid${q:+?$q}"
}

POOL_ARGS=()
[ "$POOL" -eq 0 ] || POOL_ARGS=(--pool "busybox=$POOL")
for v in base new; do
    "$v/pocketenv" --data "data-$v" image build busybox >/dev/null
    : >"serve-$v.log" # read below before the daemon may have opened it
    # each daemon with its own build's init: the exec protocol between them may differ
    POCKETENV_INIT="$PWD/$v/pocketenv-init" \
        "$v/pocketenv" --data "data-$v" serve --listen 127.0.0.1:0 --token-file "token-$v.json" \
        --rate-limit 0 --sandbox-net none --idle-timeout 0 "${POOL_ARGS[@]}" \
        2>"serve-$v.log" &
    PID[$v]=$!
    for ((i = 0; i < 100; i++)); do
        p=$(sed -n 's/.*event=listening addr=127\.0\.0\.1:\([0-9]*\) .*/\1/p' "serve-$v.log")
        [ -z "$p" ] || break
        sleep 0.1
    done
    [ -n "$p" ] || die "$v: the daemon did not listen"
    PORTN[$v]=$p
    TOK[$v]=$(jq -r .token "token-$v.json")
    api "$v" POST io.pocketenv.sandbox.createSandbox "" '{"base":"busybox","name":"pebench-ab"}' >/dev/null
    for ((i = 0; i < 200; i++)); do
        st=$(api "$v" GET io.pocketenv.sandbox.getSandbox id=pebench-ab | jq -r .sandbox.status)
        [ "$st" = RUNNING ] && break
        sleep 0.05
    done
    [ "$st" = RUNNING ] || die "$v: sandbox not RUNNING ($st)"
    SBX[$v]=$(api "$v" GET io.pocketenv.sandbox.getSandbox id=pebench-ab | jq -r .sandbox.id)
done

tlb_shootdowns() { # every CPU's count of TLB shootdown IPIs received
    awk '$1 == "TLB:" { for (i = 2; i <= NF && $i ~ /^[0-9]+$/; i++) n += $i } END { print n + 0 }' \
        /proc/interrupts
}

pool_full() { # VARIANT
    curl -s -H "Authorization: Bearer ${TOK[$1]}" "http://127.0.0.1:${PORTN[$1]}/metrics" |
        grep -q "^pocketenv_pool_ready{base=\"busybox\"} $POOL\$"
}
if [ "$POOL" -gt 0 ]; then
    for v in base new; do
        for ((i = 0; i < 1200; i++)); do pool_full "$v" && break; sleep 0.1; done
        pool_full "$v" || die "$v: the pool did not fill"
    done
fi

echo "## Daemon A/B: base $(sha256sum base/pocketenv-serve | cut -c1-12) vs new $(sha256sum new/pocketenv-serve | cut -c1-12) ($(git -C "$REPO_DIR" rev-parse --short HEAD))"
echo "load: $(cut -d' ' -f1-3 /proc/loadavg); wrk -t2 -c$CONNS -d${WRK_SECONDS}s"
echo
echo "| round | variant | endpoint | req/s | p50 | p99 | non-2xx | daemon CPU µs/req |"
echo "|---|---|---|---:|---:|---:|---:|---:|"
for ((r = 1; r <= ROUNDS && WRK_SECONDS > 0; r++)); do
    for job in $(printf '%s\n' base:get new:get base:key new:key | shuf); do
        v=${job%%:*} what=${job#*:}
        if [ "$what" = get ]; then path="/xrpc/io.pocketenv.sandbox.getSandbox?id=${SBX[$v]}"
        else path="/xrpc/io.pocketenv.server.getPublicKey"; fi
        c0=$(awk '{ print $14 + $15 }' "/proc/${PID[$v]}/stat")
        out=$(wrk -t2 -c"$CONNS" -d"${WRK_SECONDS}s" --latency -H "Authorization: Bearer ${TOK[$v]}" \
            "http://127.0.0.1:${PORTN[$v]}$path")
        c1=$(awk '{ print $14 + $15 }' "/proc/${PID[$v]}/stat")
        printf '%s\n' "$out" | awk -v r="$r" -v v="$v" -v w="$what" -v c="$((c1 - c0))" -v hz="$(getconf CLK_TCK)" '
            / requests in / { n = $1 } /Requests\/sec/ { rps = $2 }
            $1 == "50%" { p50 = $2 } $1 == "99%" { p99 = $2 } /Non-2xx/ { bad = $NF }
            END { printf "| %d | %s | %s | %.0f | %s | %s | %d | %.0f |\n", r, v,
                  (w == "get" ? "getSandbox" : "getPublicKey"), rps, p50, p99, bad, c / hz * 1e6 / n }'
    done
done
if [ "$EXEC_ROUNDS" -gt 0 ]; then
    echo
    for ((r = 1; r <= ROUNDS; r++)); do
        for v in $(printf '%s\n' base new | shuf); do
            echo "#### exec round $r: $v"
            init=$("$v/pocketenv" --data "data-$v" runtime inspect "${SBX[$v]}" | jq -e .pid)
            echo "[nsenter -a] nsenter -a -t $init /bin/sh -c true" >"peers-$v"
            c0=$(awk '{ print $14 + $15 + $16 + $17 }' "/proc/${PID[$v]}/stat")
            t0=$(tlb_shootdowns)
            bin/daemonbench -p "${PORTN[$v]}" -T "token-$v.json" exec -r "$EXEC_ROUNDS" -w 10 \
                -s "${SBX[$v]}" -f "peers-$v" -b "nsenter -a" 2>&1 | grep -E '^\| (variant|API|nsenter)' || true
            t1=$(tlb_shootdowns)
            c1=$(awk '{ print $14 + $15 + $16 + $17 }' "/proc/${PID[$v]}/stat")
            echo "TLB shootdowns (host) per exec and nsenter pair: $(awk -v t=$((t1 - t0)) \
                -v n=$((EXEC_ROUNDS + 10)) 'BEGIN { printf "%.0f", t / n }')"
            # the daemon with its reaped children (waiters, and the commands they reaped)
            echo "daemon CPU per exec (with its children, the command included): $(awk -v c=$((c1 - c0)) \
                -v n=$((EXEC_ROUNDS + 10)) -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f ms", c / hz * 1e3 / n }')"
        done
    done
fi
if [ "$CREATE_ROUNDS" -gt 0 ]; then
    echo
    if [ "$CHURN" -gt 0 ]; then
        for v in base new; do
            echo "#### churn: $CHURN sandboxes made, exec'd in and deleted through $v's API"
            # create's -r counts rounds of its two variants: two sandboxes each
            bin/daemonbench -p "${PORTN[$v]}" -T "token-$v.json" create -r $(((CHURN + 1) / 2)) -w 0 \
                -B busybox >/dev/null
        done
    fi
    for ((r = 1; r <= ROUNDS; r++)); do
        for v in $(printf '%s\n' base new | shuf); do
            [ "$POOL" -eq 0 ] || for ((i = 0; i < 1200; i++)); do pool_full "$v" && break; sleep 0.1; done
            echo "#### create round $r: $v (load $(cut -d' ' -f1 /proc/loadavg))"
            c0=$(awk '{ print $14 + $15 + $16 + $17 }' "/proc/${PID[$v]}/stat")
            f0=$(awk '{ print $10 + $12 }' "/proc/${PID[$v]}/stat")
            t0=$(tlb_shootdowns)
            bin/daemonbench -p "${PORTN[$v]}" -T "token-$v.json" create -r "$CREATE_ROUNDS" -w 2 \
                -B busybox 2>&1 | grep -E '^\| (variant|API)' || true
            t1=$(tlb_shootdowns)
            f1=$(awk '{ print $10 + $12 }' "/proc/${PID[$v]}/stat")
            c1=$(awk '{ print $14 + $15 + $16 + $17 }' "/proc/${PID[$v]}/stat")
            n=$((2 * (CREATE_ROUNDS + 2)))
            # create, exec, delete and the pool's refill of each, children included
            echo "daemon CPU per create (2 variants a round, with the exec, the delete and the refill): $(awk \
                -v c=$((c1 - c0)) -v n=$n -v hz="$(getconf CLK_TCK)" \
                'BEGIN { printf "%.2f ms", c / hz * 1e3 / n }')"
            # minor faults of the daemon and its reaped children; TLB
            # shootdown IPIs of the whole host (other work included)
            echo "per create: $(awk -v f=$((f1 - f0)) -v t=$((t1 - t0)) -v n=$n \
                'BEGIN { printf "%.0f minor faults, %.0f TLB shootdowns (host)", f / n, t / n }')"
        done
    done
fi
if [ "$ONESHOT_ROUNDS" -gt 0 ]; then
    command -v bwrap >/dev/null || die "bwrap is missing"
    HAVE_PERF=$(command -v perf || true)
    echo
    rootfs=data-new/images/busybox/rootfs
    cat >variants-run <<EOF
[bwrap] bwrap --unshare-all --die-with-parent --ro-bind $rootfs / --proc /proc --dev /dev /bin/true
[base: pocketenv run] base/pocketenv --data data-base run --image data-base/images/busybox/rootfs -- /bin/true
[new: pocketenv run] new/pocketenv --data data-new run --image $rootfs -- /bin/true
EOF
    for ((r = 1; r <= ROUNDS; r++)); do
        echo "#### one-shot round $r (load $(cut -d' ' -f1 /proc/loadavg))"
        bin/altbench -r "$ONESHOT_ROUNDS" -w 10 -b bwrap -f variants-run
        echo
        # perf stat counts bwrap's unreaped inner processes too (wait4 misses them)
        "$REPO_DIR/bench/cpu-per-run.py" ${HAVE_PERF:+--perf} -r "$ONESHOT_ROUNDS" -b bwrap -f variants-run
    done
fi
