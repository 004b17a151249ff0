#!/bin/bash
# Templates (issue 13): what each costs on disk and how fast a sandbox of
# it starts, next to debian.
#
#   bench/run-templates.sh [-r ROUNDS] [TEMPLATE...]
#
# Images come from $POCKETENV_IMAGES (the directory `pocketenv image
# build` filled; required: this script builds nothing). For every
# template given (default: every image there) it prints
#   - its own layer on disk (du: what this template adds),
#   - the whole stack it stands on (debian, node, itself),
#   - the median and 90th percentile of ROUNDS (default 20) start-to-exit
#     runs of /bin/true in a fresh sandbox (`pocketenv run --image NAME`),
#     interleaved across templates so a busy moment of the host hits all.
# A sandbox's root is the overlay of the stack, so the start time should
# not depend on the template: that is what the last columns check.
set -euo pipefail
. "$(dirname "$0")/common.sh"

ROUNDS=20
while getopts "r:h" opt; do
    case $opt in
    r) ROUNDS=$OPTARG ;;
    *)
        sed -n '2,17p' "$0"
        exit 2
        ;;
    esac
done
shift $((OPTIND - 1))
need_root
[ -n "${POCKETENV_IMAGES:-}" ] || die "set POCKETENV_IMAGES to the built images"
IMAGES=$POCKETENV_IMAGES
PE=$BUILD/pocketenv
[ -x "$PE" ] || die "no $PE: build first"
TMPD=$(mktemp -d /tmp/pebench-templates.XXXXXX)
cleanup_tmp() { rm -rf "$TMPD"; }
on_cleanup cleanup_tmp
trap run_cleanup EXIT INT TERM HUP

if [ $# -eq 0 ]; then
    set -- $(cd "$IMAGES" && for d in */image.json; do dirname "$d"; done)
fi

parent_of() { jq -r '.parent // empty' "$IMAGES/$1/image.json"; }
kib() { du -sk "$IMAGES/$1" | cut -f1; }

for t in "$@"; do
    [ -f "$IMAGES/$t/image.json" ] || die "$t is not built in $IMAGES"
done

# Samples: one line "name ms" per run, rounds interleaved.
: >"$TMPD/samples"
for ((r = 0; r < ROUNDS; r++)); do
    for t in "$@"; do
        a=$(date +%s%N)
        "$PE" --data "$TMPD/data" run --image "$t" -- /bin/true
        b=$(date +%s%N)
        echo "$t $(((b - a) / 1000))" >>"$TMPD/samples"
    done
done

echo "## Templates: size on disk and start time"
echo
machine_info
echo "- images: $IMAGES; $ROUNDS interleaved runs of \`pocketenv run --image T -- /bin/true\` each"
echo
echo "| template | stands on | own layer | whole stack | start median | start p90 |"
echo "|---|---|---:|---:|---:|---:|"
for t in "$@"; do
    own=$(kib "$t")
    total=$own
    chain=""
    p=$(parent_of "$t")
    while [ -n "$p" ]; do
        chain="${chain:+$chain, }$p"
        total=$((total + $(kib "$p")))
        p=$(parent_of "$p")
    done
    read -r med p90 < <(awk -v t="$t" '$1 == t { print $2 }' "$TMPD/samples" | sort -n |
        awk '{ v[NR] = $1 } END { m = v[int((NR + 1) / 2)]; q = v[int(NR * 0.9 + 0.999)];
              printf "%.1f %.1f\n", m / 1000, q / 1000 }')
    printf '| %s | %s | %d MiB | %d MiB | %s ms | %s ms |\n' "$t" "${chain:--}" \
        $((own / 1024)) $((total / 1024)) "$med" "$p90"
done
