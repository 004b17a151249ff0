#!/bin/bash
# Terminal gateway: keystroke -> echo latency over WebSocket and `cat`
# throughput to 1 and 10 viewers vs the PTY read directly (bench/terminal.py
# says how). Works in a fresh /var/tmp/pocketenv-bench-terminal.* with a
# snapshot of the binaries, removed on exit.
set -euo pipefail
. "$(dirname "$0")/common.sh"

usage() {
    cat <<EOT
usage: bench/run-terminal.sh [--keys N] [--mb MIB] [--reps N] [--sessions N [--soak S] [--scale-only]]
  --keys N   latency samples (default 2000)
  --mb MIB   size of the file cat prints (default 64)
  --reps N   throughput repetitions, interleaved (default 5)
  --sessions N  also N WebSocket sessions at once with API traffic (issue 21: 1000)
  --soak S      seconds of that run (default 600); --scale-only: that run alone
Needs root and a build in \$BUILD (default build/) with pocketenv-serve and bench/ptycat.
EOT
}

case "${1:-}" in -h|--help) usage; exit 0 ;; esac
for f in pocketenv-serve bench/ptycat; do
    [ -x "$BUILD/$f" ] || die "$BUILD/$f missing: run 'ninja -C $BUILD'"
done
bench_init terminal
cp "$BUILD/pocketenv-serve" "$BUILD/bench/ptycat" bin/

cleanup_terminal() {
    # Sandboxes the run made (the daemon removes none on its own).
    local d
    for d in "$TMPD"/data/sandboxes/*/; do
        [ -d "$d" ] && "$TMPD/bin/pocketenv" --data "$TMPD/data" runtime rm "$(basename "$d")" \
            >/dev/null 2>&1 || true
    done
}
on_cleanup cleanup_terminal

echo "pocketenv $(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo '?'), $(date -u +%FT%TZ)"
echo
/usr/bin/python3 "$BENCH_DIR/terminal.py" --bin "$TMPD/bin" --data "$TMPD/data" "$@"
