#!/bin/bash
# The daemon's benchmarks (issue 4): `pocketenv serve` on a free 127.0.0.1
# port with its own data dir, then
#   1. create -> first exec via the API (build/bench/daemonbench create),
#      next to the same through the CLI without the daemon (runtime create
#      + start + exec; a one-shot `pocketenv run`),
#   2. the exec round trip via the API next to its peers: `pocketenv
#      runtime exec` (CLI, no daemon), `nsenter -a`, `runc exec`, host
#      /bin/sh (daemonbench exec, all interleaved),
#   3. requests/s with wrk at -c CONNS: /healthz, getPublicKey (answered on
#      the loop thread) and getSandbox (worker pool + store), in rounds
#      shuffled every time,
#   4. the daemon's memory (VmRSS/VmHWM from /proc/PID/status) idle after
#      start and after each step.
# Issue 4 targets (printed, never asserted): create -> first exec p50 <=
# 10 ms with a prepared image; exec round trip p50 <= 3 ms; getSandbox >=
# 30k requests/s at 64 connections on 2 cores with wrk; idle RSS reported.
#
# All traffic goes to 127.0.0.1. The daemon runs with --rate-limit 0 (wrk
# would get 429s), --idle-timeout 0 and --sandbox-net none (loopback-only
# sandboxes; --nat adds a create run of a second daemon with nat). An EXIT
# trap stops every daemon (SIGTERM) and removes every sandbox left in the
# data dirs, also on failure or ^C.
set -euo pipefail
. "$(dirname "$0")/common.sh"

usage() {
    cat <<EOF
usage: bench/run-daemon.sh [-n CREATE_ROUNDS] [-e EXEC_ROUNDS] [-d WRK_SECONDS] [-k WRK_ROUNDS]
                           [-c CONNS] [-i RETRY_MS] [--nat] [-o OUTDIR]
  -n N   create -> first exec: measured rounds per variant (default 50, +5 warm-up)
  -e N   exec round trip: measured rounds (default 400, +20 warm-up)
  -d S   seconds per wrk run (default 10); -k N rounds of the three wrk runs (default 3)
  -c N   wrk connections (default 64; 2 threads)
  -i MS  create: wait between retries of exec / getSandbox (default 0.5)
  --nat  also time create -> first exec with --sandbox-net nat (a second daemon)
  -o DIR also write raw samples (CSV) and wrk outputs to DIR
Needs root, wrk, runc, jq, nsenter and a build in \$BUILD (default build/) with
pocketenv, pocketenv-serve, pocketenv-init, bench/altbench and bench/daemonbench.
EOF
}

CREATE_ROUNDS=50 EXEC_ROUNDS=400 WRK_SECONDS=10 WRK_ROUNDS=3 CONNS=64 RETRY_MS=0.5 NAT=0 OUTDIR=""
while [ $# -gt 0 ]; do
    case $1 in
    -n) CREATE_ROUNDS=$2; shift 2 ;;
    -e) EXEC_ROUNDS=$2; shift 2 ;;
    -d) WRK_SECONDS=$2; shift 2 ;;
    -k) WRK_ROUNDS=$2; shift 2 ;;
    -c) CONNS=$2; shift 2 ;;
    -i) RETRY_MS=$2; shift 2 ;;
    --nat) NAT=1; shift ;;
    -o) OUTDIR=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
    esac
done
if [ -n "$OUTDIR" ]; then
    mkdir -p "$OUTDIR" && OUTDIR=$(cd "$OUTDIR" && pwd)
fi
for t in wrk runc jq nsenter; do
    command -v "$t" >/dev/null || die "$t is missing (scripts/setup installs it)"
done
for f in pocketenv-serve bench/daemonbench; do
    [ -x "$BUILD/$f" ] || die "$BUILD/$f missing: run 'ninja -C $BUILD'"
done

bench_init daemon
cp "$BUILD/pocketenv-serve" "$BUILD/bench/daemonbench" bin/
DB=bin/daemonbench
CTR=pebench-daemon-$$
DPID="" PORT="" TOKEN_FILE="" DDATA=""
DATA_DIRS=()

# SIGTERM to the running daemon (it drains, then exits 0); SIGKILL after 15 s.
stop_daemon() {
    local i
    [ -n "$DPID" ] || return 0
    kill -TERM "$DPID" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do
        kill -0 "$DPID" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$DPID" 2>/dev/null; then
        echo "${0##*/}: daemon $DPID still running 15 s after SIGTERM: SIGKILL" >&2
        kill -KILL "$DPID" 2>/dev/null || true
    fi
    wait "$DPID" 2>/dev/null || true
    DPID=""
}

# Sandboxes outlive the daemon by design: remove what is left in each
# data dir with the runtime CLI, after the daemon is gone.
cleanup_daemon() {
    local d name
    stop_daemon
    runc --root "$TMPD/runc-state" kill "$CTR" KILL >/dev/null 2>&1 || true
    runc --root "$TMPD/runc-state" delete -f "$CTR" >/dev/null 2>&1 || true
    for d in "${DATA_DIRS[@]}"; do
        for name in $("$TMPD/bin/pocketenv" --data "$d" runtime ls --json 2>/dev/null | jq -r '.[].name'); do
            "$TMPD/bin/pocketenv" --data "$d" runtime rm "$name" >/dev/null ||
                echo "${0##*/}: could not remove sandbox $name of $d" >&2
        done
    done
}
on_cleanup cleanup_daemon

# start_daemon NET DIR: build the busybox image in DIR, start the daemon
# on an ephemeral port; sets DPID PORT TOKEN_FILE DDATA.
start_daemon() {
    local net=$1 i
    DDATA=$TMPD/$2
    DATA_DIRS+=("$DDATA")
    TOKEN_FILE=$TMPD/token-$net.json
    "$PE" --data "$DDATA" image build busybox >/dev/null || die "image build busybox failed"
    "$PE" --data "$DDATA" serve --listen 127.0.0.1:0 --token-file "$TOKEN_FILE" --rate-limit 0 \
        --sandbox-net "$net" --idle-timeout 0 2>"$TMPD/serve-$net.log" &
    DPID=$!
    for ((i = 0; i < 100; i++)); do
        PORT=$(sed -n 's/.*event=listening addr=127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$TMPD/serve-$net.log")
        [ -z "$PORT" ] || break
        kill -0 "$DPID" 2>/dev/null || { cat "$TMPD/serve-$net.log" >&2; die "the daemon exited"; }
        sleep 0.1
    done
    [ -n "$PORT" ] || die "the daemon did not listen within 10 s"
    [ "$(readlink /proc/$DPID/exe)" = "$TMPD/bin/pocketenv-serve" ] ||
        die "pid $DPID is not pocketenv-serve"
}

# api METHOD NSID [QUERY] [BODY]: one call with curl, the answer on stdout.
api() {
    local m=$1 nsid=$2 q=${3:-} body=${4:-} tok
    tok=$(jq -r .token "$TOKEN_FILE")
    if [ "$m" = POST ]; then
        curl -sS --fail-with-body -H "Authorization: Bearer $tok" -H 'Content-Type: application/json' \
            -d "$body" "http://127.0.0.1:$PORT/xrpc/$nsid${q:+?$q}"
    else
        curl -sS --fail-with-body -H "Authorization: Bearer $tok" "http://127.0.0.1:$PORT/xrpc/$nsid${q:+?$q}"
    fi
}

# create_peers NET: the same work without the daemon, for daemonbench -f:
# runtime create + start + exec (then rm, untimed) in the daemon's data
# dir under a name the daemon leaves alone, and a one-shot run.
create_peers() {
    local pe="$PE --data $DDATA"
    cat >"create-peers-$1" <<EOF
[CLI create + start + exec (no daemon)] $pe runtime create pebench-cli --image busybox --net $1 && $pe runtime start pebench-cli && $pe runtime exec pebench-cli -- /bin/sh -c true ;; $pe runtime rm pebench-cli
[CLI one-shot run (no daemon)] $pe run --image busybox --net $1 -- /bin/sh -c true
EOF
}

mem_row() {
    local st=/proc/$DPID/status
    awk -v what="$1" '
        /^VmRSS/ { rss = $2 } /^VmHWM/ { hwm = $2 } /^RssAnon/ { anon = $2 }
        /^RssFile/ { file = $2 } /^Threads/ { thr = $2 }
        END { printf "| %s | %.1f | %.1f | %.1f | %.1f | %d |\n", what, rss / 1024, hwm / 1024,
              anon / 1024, file / 1024, thr }' "$st"
}

MEM_TABLE=""
mem_note() {
    MEM_TABLE+=$(mem_row "$1")$'\n'
}

# CPU ticks of the daemon: all threads, and the loop (main) thread alone.
cpu_ticks() {
    echo "$(awk '{ print $14 + $15 }' "/proc/$DPID/stat") $(awk '{ print $14 + $15 }' "/proc/$DPID/task/$DPID/stat")"
}

# wrk_run LABEL PATH: one wrk run; prints a tab-separated line: label,
# req/s, latency p50 p90 p99, non-2xx, socket errors, daemon CPU us per
# request (all threads, loop thread), wrk's CPU us per request.
wrk_run() {
    local label=$1 path=$2 out c0 c1
    c0=$(cpu_ticks)
    out=$( { TIMEFORMAT='WRKCPU %U %S'; time wrk -t2 -c"$CONNS" -d"${WRK_SECONDS}s" --latency \
        -H "Authorization: Bearer $(jq -r .token "$TOKEN_FILE")" "http://127.0.0.1:$PORT$path"; } 2>&1)
    c1=$(cpu_ticks)
    [ -z "$OUTDIR" ] || printf '%s\n' "$out" >>"$OUTDIR/wrk-${label//\//}.txt"
    printf '%s\n' "$out" | awk -v l="$label" -v c0="$c0" -v c1="$c1" -v hz="$(getconf CLK_TCK)" '
        / requests in / { n = $1 }
        /Requests\/sec/ { rps = $2 }
        $1 == "50%" { p50 = $2 } $1 == "90%" { p90 = $2 } $1 == "99%" { p99 = $2 }
        /Non-2xx/ { bad = $NF } /Socket errors/ { sock = $0; sub(/.*errors: /, "", sock) }
        /^WRKCPU/ { wrk = $2 + $3 }
        END {
            split(c0, a, " "); split(c1, b, " ")
            printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%.0f\t%.0f\t%.0f\n", l, rps, p50, p90, p99, bad + 0,
                sock ? sock : "none", (b[1] - a[1]) / hz * 1e6 / n, (b[2] - a[2]) / hz * 1e6 / n, wrk * 1e6 / n
        }'
}

echo "## Daemon benchmarks (issue 4)"
echo
machine_info
echo "- daemon: \`pocketenv serve --listen 127.0.0.1:0 --rate-limit 0 --idle-timeout 0 --sandbox-net none\`,"
echo "  pocketenv-serve sha256 $(sha256sum bin/pocketenv-serve | cut -c1-12), own --data dir, SQLite store;"
echo "  $(dpkg-query -W -f='libmicrohttpd ${Version}' libmicrohttpd12 2>/dev/null); $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)"

start_daemon none data-none
echo "- daemon pid $DPID on 127.0.0.1:$PORT"
sleep 1
mem_note "idle, 1 s after start"

echo
echo "### 1. createSandbox -> first successful exec of \`true\` (busybox image already built)"
echo
create_peers none
"$DB" -p "$PORT" -T "$TOKEN_FILE" create -r "$CREATE_ROUNDS" -i "$RETRY_MS" -f create-peers-none \
    -b "CLI create + start + exec (no daemon)" ${OUTDIR:+-o "$OUTDIR/create-none.csv"}
mem_note "after step 1 ($((CREATE_ROUNDS * 2 + 10)) creates + deletes)"

echo
echo "### 2. exec round trip into one running sandbox"
echo
api POST io.pocketenv.sandbox.createSandbox "" '{"base":"busybox","name":"pebench-exec"}' >/dev/null
for ((i = 0; i < 300; i++)); do
    st=$(api GET io.pocketenv.sandbox.getSandbox id=pebench-exec | jq -r .sandbox.status)
    [ "$st" = RUNNING ] && break
    [ "$st" = INITIALIZING ] || die "sandbox pebench-exec: $st"
    sleep 0.1
done
[ "$st" = RUNNING ] || die "sandbox pebench-exec not RUNNING after 30 s"
SBX=$(api GET io.pocketenv.sandbox.getSandbox id=pebench-exec | jq -r .sandbox.id)
SPID=$("$PE" --data "$DDATA" runtime inspect "$SBX" --json | jq -e .pid)
build_image # runc's rootfs: a copy of the busybox image
make_runc_bundle runc '["/bin/sleep", "1000000"]'
runc --root runc-state run -d --bundle runc "$CTR" </dev/null >/dev/null 2>&1 ||
    die "runc run -d failed"
cat >exec-peers <<EOF
[host /bin/sh -c true] /bin/sh -c true
[pocketenv --help (CLI exec only)] $PE --help
[pocketenv runtime exec (CLI, no daemon)] $PE --data $DDATA runtime exec $SBX -- /bin/sh -c true
[nsenter -a] nsenter -a -t $SPID /bin/sh -c true
[runc exec] runc --root runc-state exec $CTR /bin/sh -c true
EOF
echo "Sandbox $SBX (\`createSandbox {\"base\":\"busybox\"}\` through the API, init pid $SPID);"
echo "runc: \`runc run -d\` of /bin/sleep on a copy of the same rootfs. The API's exec runs"
echo "\`/bin/sh -c COMMAND\`, so every peer runs \`/bin/sh -c true\` too (busybox: one exec)."
echo
"$DB" -p "$PORT" -T "$TOKEN_FILE" exec -s "$SBX" -r "$EXEC_ROUNDS" -f exec-peers \
    -b "pocketenv runtime exec (CLI, no daemon)" ${OUTDIR:+-o "$OUTDIR/exec.csv"}
mem_note "after step 2"

echo
echo "### 3. requests/s with wrk -t2 -c$CONNS -d${WRK_SECONDS}s, $WRK_ROUNDS rounds, order shuffled per round"
echo
echo "wrk runs on the same 2 vCPUs as the daemon. /healthz is answered before the request is"
echo "complete, so libmicrohttpd closes the connection after it (\`Connection: close\`): it measures"
echo "a new TCP connection per request. getPublicKey is the keep-alive ceiling of the HTTP + XRPC"
echo "path (answered on the loop thread); getSandbox goes through the worker pool and SQLite."
echo
WRK_ALL=""
for ((k = 1; k <= WRK_ROUNDS; k++)); do
    for v in $(printf '%s\n' healthz pubkey get | shuf); do
        case $v in
        healthz) WRK_ALL+=$(wrk_run "/healthz" /healthz)$'\n' ;;
        pubkey) WRK_ALL+=$(wrk_run "getPublicKey" /xrpc/io.pocketenv.server.getPublicKey)$'\n' ;;
        get) WRK_ALL+=$(wrk_run "getSandbox" "/xrpc/io.pocketenv.sandbox.getSandbox?id=$SBX")$'\n' ;;
        esac
    done
done
echo "| endpoint | req/s (median of rounds) | req/s per round | latency p50 | p90 | p99 | daemon CPU µs/req (loop thread) | wrk CPU µs/req | non-2xx | socket errors |"
echo "|---|---:|---|---:|---:|---:|---:|---:|---:|---|"
for l in /healthz getPublicKey getSandbox; do
    printf '%s' "$WRK_ALL" | awk -F'\t' -v l="$l" '
        $1 == l { n++; rps[n] = $2; line[n] = $0; bad += $6; if ($7 != "none") sock = sock $7 "; " }
        END {
            for (i = 1; i <= n; i++) { s[i] = rps[i]; idx[i] = i }
            for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++)
                if (s[j] < s[i]) { t = s[i]; s[i] = s[j]; s[j] = t; t = idx[i]; idx[i] = idx[j]; idx[j] = t }
            m = idx[int((n + 1) / 2)]; split(line[m], f, "\t")
            all = ""; for (i = 1; i <= n; i++) all = all (i > 1 ? ", " : "") sprintf("%.0f", rps[i])
            printf "| %s | **%.0f** | %s | %s | %s | %s | %s (%s) | %s | %d | %s |\n", l, f[2], all, f[3], f[4],
                f[5], f[8], f[9], f[10], bad, sock ? sock : "none"
        }'
done
echo
echo "Latency and CPU columns are from the round with the median req/s. CPU per request: the"
echo "daemon's utime+stime (/proc, clock ticks) and wrk's, over the run, divided by its requests."
mem_note "after step 3 (wrk)"
sleep 2
mem_note "idle again, 2 s later"

echo
echo "### 4. Memory of the daemon process (pocketenv-serve, /proc/$DPID/status)"
echo
echo "| when | VmRSS MiB | VmHWM MiB | RssAnon | RssFile | threads |"
echo "|---|---:|---:|---:|---:|---:|"
printf '%s' "$MEM_TABLE"

api POST io.pocketenv.sandbox.deleteSandbox "id=$SBX" '{}' >/dev/null
stop_daemon
echo
echo "Daemon stopped with SIGTERM: $(tail -n1 "$TMPD/serve-none.log" | sed 's/^pocketenv\[[0-9]*\] //')"

if [ "$NAT" = 1 ]; then
    start_daemon nat data-nat
    echo
    echo "### 1b. createSandbox -> first exec, second daemon with --sandbox-net nat (pid $DPID)"
    echo
    create_peers nat
    "$DB" -p "$PORT" -T "$TOKEN_FILE" create -r "$CREATE_ROUNDS" -i "$RETRY_MS" -f create-peers-nat \
        -b "CLI create + start + exec (no daemon)" ${OUTDIR:+-o "$OUTDIR/create-nat.csv"}
    stop_daemon
fi
