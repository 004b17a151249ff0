#!/bin/bash
# The peer of "createSandbox -> first exec" (bench/run-create.sh):
#   create-peer.sh ROOTFS [BWRAP ARGS...]
# start a sandbox of ROOTFS (plus ARGS, e.g. a template layer bound over
# its parent's root) with bubblewrap (all namespaces, /bin/sleep as its
# pid 1), run /bin/true in it with nsenter -a as soon as bwrap reports the
# child's pid (on --info-fd, read through a FIFO), then kill it.
# Timed from outside, like the API variants.
set -eu
dir=$(mktemp -d)
bw=""
trap '[ -z "$bw" ] || kill -9 "$bw" 2>/dev/null; rm -rf "$dir"' EXIT
mkfifo "$dir/info"
root=$1
shift
bwrap --unshare-all --die-with-parent --as-pid-1 --ro-bind "$root" / "$@" --proc /proc \
    --dev /dev --info-fd 3 /bin/sleep 1000 3>"$dir/info" &
bw=$!
read -r -d '}' info <"$dir/info" || true
pid=$(echo "$info" | sed -n 's/.*"child-pid": *\([0-9]*\).*/\1/p')
[ -n "$pid" ] || exit 1
# bwrap reports the pid before the child has moved into its new root: an
# nsenter that early finds no /bin/true. Retried, as the API variant
# retries its exec.
for ((i = 0; i < 200; i++)); do
    ! nsenter -a -t "$pid" /bin/true 2>/dev/null || break
done
[ "$i" -lt 200 ] || exit 1
{ kill -9 "$bw" && wait "$bw"; } 2>/dev/null || true
bw=
