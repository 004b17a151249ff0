#!/bin/bash
# exec of /bin/true into a running sandbox: `pocketenv runtime exec` vs
# `nsenter -a` into the same sandbox's init vs `runc exec` into a runc
# container started with `run -d`; host /bin/true is the floor and
# `pocketenv --help` shows what the exec of the pocketenv binary alone
# costs (the CLI path pays it on top of the exec itself). All interleaved
# in one altbench run; ratios are relative to host /bin/true (issue 2
# target: pocketenv runtime exec <= 1.5 ms median).
set -euo pipefail
. "$(dirname "$0")/common.sh"

usage() {
    cat <<EOF
usage: bench/run-exec.sh [-r ROUNDS] [-w WARMUP] [-o OUTDIR] [--rcu asis|expedited|both] [-F N]
  -r N      measured rounds (default 200); -w N warm-up rounds (default 10)
  -o DIR    also write the tables (TAG.md) and raw samples (TAG.csv) to DIR
  --rcu     asis: host as it is; expedited: rcu_expedited=1 for the run
            (restored after); both (default): one run of each
  -F N      let N failed runs be dropped and rerun instead of aborting (default 0)
Needs root, runc, jq, nsenter and a build in \$BUILD (default build/).
EOF
}

parse_bench_opts "$@"
bench_init exec

BOX=pebench-exec
CTR=pebench-exec-$$

cleanup_exec() {
    runc --root "$TMPD/runc-state" kill "$CTR" KILL >/dev/null 2>&1 || true
    runc --root "$TMPD/runc-state" delete -f "$CTR" >/dev/null 2>&1 || true
    "$TMPD/bin/pocketenv" --data "$TMPD/data" runtime rm "$BOX" >/dev/null 2>&1 || true
}
on_cleanup cleanup_exec

build_image
"$PE" --data "$DATA" runtime create "$BOX" --image busybox >/dev/null
"$PE" --data "$DATA" runtime start "$BOX"
PID=$("$PE" --data "$DATA" runtime inspect "$BOX" --json | jq -e .pid)

make_runc_bundle runc '["/bin/sleep", "1000000"]'
runc --root runc-state run -d --bundle runc "$CTR" </dev/null >/dev/null 2>&1 ||
    die "runc run -d failed"

cat >variants <<EOF
[host /bin/true] /bin/true
[pocketenv --help (CLI exec only)] $PE --help
[pocketenv runtime exec] $PE --data $DATA runtime exec $BOX -- /bin/true
[nsenter -a] nsenter -a -t $PID /bin/true
[runc exec] runc --root runc-state exec $CTR /bin/true
EOF

echo "## exec of /bin/true into a running sandbox"
echo
machine_info
echo "- sandbox: \`runtime create $BOX --image busybox\` (default options) + \`runtime start\`, init pid $PID;"
echo "  runc: \`runc run -d\` of /bin/sleep on a copy of the same rootfs"
run_modes exec variants "host /bin/true"
