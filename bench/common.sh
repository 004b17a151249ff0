# Shared by bench/run-*.sh (sourced, never run on its own).
#
# Every run works in its own temporary directory (data dir, snapshot of the
# binaries, runc bundles) that an EXIT trap removes, also on ^C. The
# binaries are copied first so a rebuild of the shared build directory in
# the middle of a run cannot mix two versions into one table.
#
# Host settings: only /sys/kernel/rcu_expedited is ever changed, only when
# asked (--rcu expedited|both), and the original value is written back by
# rcu_restore, which the EXIT trap also calls.

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
REPO_DIR=$(cd "$BENCH_DIR/.." && pwd)
BUILD=${BUILD:-$REPO_DIR/build}
RCU_FILE=/sys/kernel/rcu_expedited
RCU_ORIG=
CLEANUP_HOOKS=()

die() {
    echo "${0##*/}: $*" >&2
    exit 1
}

need_root() {
    [ "$(id -u)" = 0 ] || die "needs root (namespaces, cgroups)"
}

# Run the registered cleanup hooks (last registered first), once.
run_cleanup() {
    local rc=$? i
    trap - EXIT INT TERM HUP
    rcu_restore
    for ((i = ${#CLEANUP_HOOKS[@]} - 1; i >= 0; i--)); do
        "${CLEANUP_HOOKS[i]}" || true
    done
    exit "$rc"
}

on_cleanup() {
    CLEANUP_HOOKS+=("$1")
}

# Create $TMPD, cd into it (so the commands in the tables are short,
# relative paths) and arrange for everything to be cleaned up on exit.
bench_init() {
    need_root
    TMPD=$(mktemp -d "/var/tmp/pocketenv-bench-$1.XXXXXX")
    trap run_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    trap 'exit 129' HUP
    on_cleanup remove_tmpd
    on_cleanup cleanup_attach_probe
    snapshot_bins
    cd "$TMPD" || exit 1
}

# Files in the runtime's tmpfs run directory (a running sandbox's run.json,
# spawn socket, resolv.conf and hosts; docs/design/runtime.md): every
# sandbox of the host, so compare before and after a run.
run_dir_files() {
    (ls -A /run/pocketenv/sandboxes 2>/dev/null || true) | wc -l
}

remove_tmpd() {
    cd /
    # Never recurse into a mount that is still there (an image or an
    # overlay of a sandbox that failed to stop): report it instead.
    if grep -q " ${TMPD}[/ ]" /proc/self/mountinfo; then
        echo "${0##*/}: mounts left below $TMPD, not removing it:" >&2
        grep " ${TMPD}[/ ]" /proc/self/mountinfo >&2
        return 1
    fi
    rm -rf --one-file-system "$TMPD"
}

snapshot_bins() {
    local f
    for f in pocketenv pocketenv-init bench/altbench; do
        [ -x "$BUILD/$f" ] || die "$BUILD/$f missing: run 'ninja -C $BUILD pocketenv pocketenv-init bench/altbench'"
    done
    mkdir -p "$TMPD/bin"
    cp "$BUILD/pocketenv" "$BUILD/pocketenv-init" "$BUILD/bench/altbench" "$TMPD/bin/"
    # Relative to $TMPD, the working directory of the run.
    PE=bin/pocketenv
    ALTBENCH=bin/altbench
    DATA=data
    export POCKETENV_INIT=$TMPD/bin/pocketenv-init
}

# Build the busybox image in the run's data dir; sets ROOTFS.
build_image() {
    "$PE" --data "$DATA" image build busybox >/dev/null || die "image build busybox failed"
    ROOTFS=$DATA/images/busybox/rootfs
}

# An OCI bundle for runc in $1 with a copy of $ROOTFS and the given args
# (a JSON array), no terminal.
make_runc_bundle() {
    local dir=$1 args=$2
    mkdir -p "$dir"
    cp -a "$ROOTFS" "$dir/rootfs"
    (cd "$dir" && runc spec) || die "runc spec failed"
    if ! jq --argjson a "$args" '.process.args = $a | .process.terminal = false' \
        "$dir/config.json" >"$dir/config.json.new"; then
        die "editing $dir/config.json failed"
    fi
    mv "$dir/config.json.new" "$dir/config.json"
}

cgroup_mode() {
    local t
    t=$(stat -fc %T /sys/fs/cgroup)
    if [ "$t" = cgroup2fs ]; then
        echo "v2 (unified)"
    elif [ -d /sys/fs/cgroup/unified ] && [ "$(stat -fc %T /sys/fs/cgroup/unified)" = cgroup2fs ]; then
        echo "v1 hybrid (cgroup2 at /sys/fs/cgroup/unified)"
    else
        echo "v1"
    fi
}

# Options of the first cgroup2 mount (favordynmods shows here when set).
cgroup2_opts() {
    awk '$9 == "cgroup2" { print $5 ": " $6 "," $11; exit }' /proc/self/mountinfo
}

# The CPU, the hypervisor under this machine and the Meltdown mitigation:
# figures taken on different machines differ by several times for these
# (bench/README.md, "Another machine"), so every report names them.
cpu_info() {
    local model hv pti
    model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
    hv=$(dmesg 2>/dev/null | sed -n 's/.*Hypervisor detected: //p' | head -1)
    [ -n "$hv" ] || { grep -qw hypervisor /proc/cpuinfo && hv="yes (kind unknown)" || hv=none; }
    pti=$(cat /sys/devices/system/cpu/vulnerabilities/meltdown 2>/dev/null || echo unknown)
    echo "${model:-unknown}; hypervisor: $hv; meltdown: $pti"
}

machine_info() {
    local head dirty="" src
    head=$(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo unknown)
    git -C "$REPO_DIR" diff --quiet HEAD -- lib cli init include meson.build 2>/dev/null ||
        dirty=" (working tree has uncommitted changes in lib/cli/init)"
    src="$head$dirty"
    # A build of another tree (e.g. a clean export of one commit) says where
    # it came from with BENCH_REV.
    [ -z "${BENCH_REV:-}" ] || src=$BENCH_REV
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- nproc: $(nproc); kernel: $(uname -r); MemTotal: $(awk '/^MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
    echo "- CPU: $(cpu_info)"
    echo "- cgroups: $(cgroup_mode); cgroup2 mount: $(cgroup2_opts)"
    echo "- rcu_expedited: $(cat $RCU_FILE); load avg: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- pocketenv: $BUILD/pocketenv at $src, sha256 $(sha256sum "$PE" | cut -c1-12), copied to bin/"
    echo "- working directory of the commands below: a fresh temporary directory (data/ = --data dir)"
    echo "- tools: $(bwrap --version 2>/dev/null | head -1); runc $(runc --version 2>/dev/null | awk 'NR==1 {print $3}'); $(nsenter --version 2>/dev/null)"
}

# rcu_set VALUE: write VALUE to rcu_expedited, remembering the original.
rcu_set() {
    [ -n "$RCU_ORIG" ] || RCU_ORIG=$(cat "$RCU_FILE")
    echo "$1" >"$RCU_FILE" || die "cannot write $RCU_FILE"
}

rcu_restore() {
    if [ -n "$RCU_ORIG" ]; then
        echo "$RCU_ORIG" >"$RCU_FILE" || echo "${0##*/}: FAILED to restore $RCU_FILE to $RCU_ORIG" >&2
        RCU_ORIG=
    fi
}

# Common options of the altbench-based scripts: sets ROUNDS WARMUP OUTDIR
# RCU_MODE FAILS; the caller passes "$@".
parse_bench_opts() {
    ROUNDS=200 WARMUP=10 OUTDIR="" RCU_MODE=both FAILS=0
    while [ $# -gt 0 ]; do
        case $1 in
        -r) ROUNDS=$2; shift 2 ;;
        -w) WARMUP=$2; shift 2 ;;
        -o) OUTDIR=$2; shift 2 ;;
        -F) FAILS=$2; shift 2 ;;
        --rcu) RCU_MODE=$2; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
        esac
    done
    case $RCU_MODE in asis | expedited | both) ;; *) die "--rcu asis|expedited|both" ;; esac
    if [ -n "$OUTDIR" ]; then
        mkdir -p "$OUTDIR" && OUTDIR=$(cd "$OUTDIR" && pwd)
    fi
}

# run_altbench TAG VARIANTS_FILE BASELINE: one interleaved run, the table on
# stdout (and in $OUTDIR/TAG.md, raw samples in $OUTDIR/TAG.csv).
run_altbench() {
    local tag=$1 file=$2 base=$3 raw=()
    [ -z "$OUTDIR" ] || raw=(-o "$OUTDIR/$tag.csv")
    "$ALTBENCH" -r "$ROUNDS" -w "$WARMUP" -F "$FAILS" -b "$base" -f "$file" "${raw[@]}" |
        if [ -n "$OUTDIR" ]; then tee "$OUTDIR/$tag.md"; else cat; fi
    return "${PIPESTATUS[0]}"
}

# Median time of the first write of a pid to a fresh v1 memory cgroup's
# cgroup.procs (9 tries, 0.2 s apart), in ms: shows whether this host makes
# that attach wait for an RCU grace period (~10-20 ms) or not. The probe
# cgroups are named pocketenv-test-bench-* below the runtime's "pocketenv"
# parent and removed again; "n/a" without a v1 memory hierarchy.
attach_probe() {
    local base=/sys/fs/cgroup/memory/pocketenv i d pid s e all=()
    if [ ! -d "$base" ]; then
        echo "n/a"
        return
    fi
    for i in 1 2 3 4 5 6 7 8 9; do
        d=$base/pocketenv-test-bench-$$-$i
        mkdir "$d"
        sleep 30 &
        pid=$!
        sleep 0.2
        s=$EPOCHREALTIME
        echo "$pid" >"$d/cgroup.procs"
        e=$EPOCHREALTIME
        kill "$pid"
        wait "$pid" 2>/dev/null || true
        rmdir "$d"
        all+=("$(echo "($e - $s) * 1000" | bc -l)")
    done
    printf '%s\n' "${all[@]}" | sort -g | awk '{ v[NR] = $1 } END { printf "%.3f ms (min %.3f, max %.3f)", v[5], v[1], v[9] }'
}

cleanup_attach_probe() {
    local d
    for d in "/sys/fs/cgroup/memory/pocketenv/pocketenv-test-bench-$$-"*; do
        [ -d "$d" ] || continue
        # only the probe's own sleep can be in there
        xargs -r kill -9 <"$d/cgroup.procs" 2>/dev/null || true
        sleep 0.1
        rmdir "$d" || echo "${0##*/}: could not remove $d" >&2
    done
}

# run_modes TAG VARIANTS_FILE BASELINE: the as-is run, then the one with
# rcu_expedited=1, as --rcu asks; the host value is restored right after.
run_modes() {
    local tag=$1 file=$2 base=$3 orig
    orig=$(cat "$RCU_FILE")
    if [ "$RCU_MODE" != expedited ]; then
        echo
        echo "### $tag, host as is (rcu_expedited=$orig)"
        echo
        echo "First attach to a fresh v1 memory cgroup (probe): $(attach_probe)"
        echo
        run_altbench "$tag-asis" "$file" "$base" || die "$tag (as is) failed"
    fi
    if [ "$RCU_MODE" != asis ]; then
        echo
        echo "### $tag, rcu_expedited=1 for this run only (host value $orig, restored after)"
        echo
        rcu_set 1
        echo "First attach to a fresh v1 memory cgroup (probe): $(attach_probe)"
        echo
        run_altbench "$tag-rcu-expedited" "$file" "$base" || die "$tag (rcu_expedited=1) failed"
        rcu_restore
        echo
        echo "(rcu_expedited restored to $(cat "$RCU_FILE"))"
    fi
}
