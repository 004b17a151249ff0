#!/bin/bash
# Start-to-exit of /bin/true in a fresh sandbox: pocketenv run (full
# isolation, and with --userns host) vs bubblewrap vs runc, with host
# /bin/true as the floor. All variants interleaved in one altbench run
# (shuffled every round); the ratio column is relative to bwrap (issue 2
# target: pocketenv <= 0.8 x bwrap). By default two runs: the host as it is,
# then with rcu_expedited=1 (restored afterwards), which removes the RCU
# grace period the first attach to a v1 memory cgroup waits for.
set -euo pipefail
. "$(dirname "$0")/common.sh"

usage() {
    cat <<EOF
usage: bench/run-startup.sh [-r ROUNDS] [-w WARMUP] [-o OUTDIR] [--rcu asis|expedited|both] [-F N]
  -r N      measured rounds (default 200); -w N warm-up rounds (default 10)
  -o DIR    also write the tables (TAG.md) and raw samples (TAG.csv) to DIR
  --rcu     asis: host as it is; expedited: rcu_expedited=1 for the run
            (restored after); both (default): one run of each
  -F N      let N failed runs be dropped and rerun instead of aborting (default 0)
Needs root, bwrap, runc, jq and a build in \$BUILD (default build/).
EOF
}

parse_bench_opts "$@"
bench_init startup

cleanup_runc() {
    runc --root "$TMPD/runc-state" delete -f "pebench-start-$$" >/dev/null 2>&1 || true
}
on_cleanup cleanup_runc

build_image
make_runc_bundle runc '["/bin/true"]'

cat >variants <<EOF
[host /bin/true] /bin/true
[pocketenv --help (CLI exec only)] $PE --help
[pocketenv run] $PE --data $DATA run --image $ROOTFS -- /bin/true
[pocketenv run --userns host] $PE --data $DATA run --image $ROOTFS --userns host -- /bin/true
[bwrap] bwrap --unshare-all --die-with-parent --ro-bind $ROOTFS / --proc /proc --dev /dev /bin/true
[runc run] runc --root runc-state run --bundle runc pebench-start-$$
EOF

echo "## Sandbox start: /bin/true in a fresh sandbox"
echo
machine_info
echo "- rootfs: busybox image built by pocketenv ($(du -sh "$ROOTFS" | cut -f1)); runc gets a copy"
run_modes startup variants bwrap
