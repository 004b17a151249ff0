#!/bin/bash
# Where the CPU time of `pocketenv run -- /bin/true` goes. First the CPU
# per run (perf stat task-clock, children included) of host /bin/true,
# pocketenv run and bwrap, interleaved; then perf samples (cpu-clock, call
# graphs) over N back-to-back pocketenv runs, attributed to the outermost
# syscall (or page fault) on each sample's stack, in ms per run. A CPU
# profile, not a latency one: time spent waiting (RCU, I/O) does not show
# here; compare with the wall-clock medians of run-startup.sh.
set -euo pipefail
. "$(dirname "$0")/common.sh"

usage() {
    cat <<EOF
usage: bench/profile-startup.sh [-n RUNS] [-- EXTRA pocketenv run OPTIONS]
  -n N   runs to sample (default 200)
Needs root, perf, python3 and a build in \$BUILD (default build/).
EOF
}

RUNS=200
EXTRA=()
while [ $# -gt 0 ]; do
    case $1 in
    -n) RUNS=$2; shift 2 ;;
    --) shift; EXTRA=("$@"); break ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
    esac
done
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "-n wants a positive number"
command -v perf >/dev/null || die "perf not installed"

bench_init profile
build_image
FREQ=10000
for _ in 1 2 3; do "$PE" --data "$DATA" run --image "$ROOTFS" "${EXTRA[@]}" -- /bin/true; done
# shellcheck disable=SC2016 # $1 and $@ belong to the inner bash
perf record -q -o perf.data -e cpu-clock -F "$FREQ" -g -- \
    bash -c 'for ((i = 0; i < $1; i++)); do "${@:2}"; done' _ "$RUNS" \
    "$PE" --data "$DATA" run --image "$ROOTFS" "${EXTRA[@]}" -- /bin/true
perf script -i perf.data -F comm,ip,sym 2>/dev/null >perf.txt

# CPU ms (perf task-clock of every process of one run, children included)
# of one run of CMD...
cpu_of() {
    perf stat -x, -e task-clock -- "$@" 2>&1 >/dev/null | awk -F, '/task-clock/ { print $1 }'
}

# CPU per run of the three commands, interleaved round-robin over $RUNS
# rounds so that drift of the machine hits all three alike.
cpu_table() {
    local -a label=("host /bin/true" "pocketenv run${EXTRA[*]:+ }${EXTRA[*]}" "bwrap --unshare-all")
    local -a sum=(0 0 0)
    local r
    for ((r = 0; r < RUNS; r++)); do
        sum[0]=$(echo "${sum[0]} + $(cpu_of /bin/true)" | bc -l)
        sum[1]=$(echo "${sum[1]} + $(cpu_of "$PE" --data "$DATA" run --image "$ROOTFS" "${EXTRA[@]}" -- /bin/true)" | bc -l)
        sum[2]=$(echo "${sum[2]} + $(cpu_of bwrap --unshare-all --die-with-parent --ro-bind "$ROOTFS" / \
            --proc /proc --dev /dev /bin/true)" | bc -l)
    done
    echo "| command | CPU ms per run (mean of $RUNS, interleaved) |"
    echo "|---|---:|"
    for r in 0 1 2; do
        printf '| %s | %.3f |\n' "${label[r]}" "$(echo "${sum[r]} / $RUNS" | bc -l)"
    done
}

echo "## CPU profile of \`pocketenv run ${EXTRA[*]}${EXTRA[*]:+ }-- /bin/true\` ($RUNS runs, cpu-clock at $FREQ Hz)"
echo
machine_info
echo
cpu_table
echo
python3 - "$RUNS" "$FREQ" perf.txt <<'EOF'
import collections, re, sys

runs, freq, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
ms = 1000.0 / freq / runs  # one sample, in ms per run
entry = re.compile(r"^(__x64_sys_|__do_sys_|ksys_)(\w+)$|^(exc_page_fault)$")
by_comm, by_call = collections.Counter(), collections.Counter()
comm, stack = None, []

def flush():
    if comm is None or comm in ("bash", "seq"):
        return
    label = "user space / other"
    for sym in reversed(stack):  # outermost frame first
        m = entry.match(sym)
        if m:
            label = m.group(2) or "page faults"
            break
    if "do_seccomp" in stack:
        label = "seccomp (filter load)"
    by_comm[comm] += 1
    by_call[label] += 1

for line in open(path):
    if not line.strip():
        flush()
        comm, stack = None, []
    elif not line.startswith("\t"):
        comm = line.split()[0]
    else:
        parts = line.split(None, 1)
        stack.append(parts[1].strip() if len(parts) > 1 else "?")
flush()
total = sum(by_comm.values())
print("| process (comm) | CPU ms per run |\n|---|---:|")
for c, n in by_comm.most_common():
    print(f"| {c} | {n * ms:.3f} |")
print(f"| **total** | **{total * ms:.3f}** |\n")
print("| attributed to (outermost syscall on the stack) | CPU ms per run | share |\n|---|---:|---:|")
for c, n in by_call.most_common(20):
    print(f"| {c} | {n * ms:.3f} | {100.0 * n / total:.1f}% |")
EOF
