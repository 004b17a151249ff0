#!/bin/sh
# Copy the page (SRC: this folder) and the npm packages' browser modules
# (NODE_MODULES, installed by `npm ci`) into OUT, the folder the daemon
# serves. Run by ninja on every build; a file is rewritten only when it
# changed. Without node_modules the build still succeeds: the terminal's
# modules become stubs that say what to do, and a warning is printed.
set -eu
src=$1 nm=$2 out=$3
mkdir -p "$out"

put() { # put SOURCE NAME
    cmp -s "$1" "$out/$2" || cp "$1" "$out/$2"
}

vendor() { # vendor PATH-IN-NODE_MODULES NAME STUB
    if [ -f "$nm/$1" ]; then
        put "$nm/$1" "$2"
    else
        echo "WARNING: $nm/$1 is missing: run 'npm ci' in the source folder (scripts/setup does)" >&2
        printf '%s\n' "$3" >"$out/$2.tmp"
        put "$out/$2.tmp" "$2"
        rm -f "$out/$2.tmp"
    fi
}

for f in index.html app.js api.js ui.js term.js panes.js tar.js app.css preview.html preview.js; do
    put "$src/$f" "$f"
done
missing='xterm.js is not installed: run npm ci in the source folder, then rebuild'
vendor @xterm/xterm/lib/xterm.mjs xterm.mjs \
    "export class Terminal { constructor() { throw new Error('$missing'); } }"
vendor @xterm/addon-fit/lib/addon-fit.mjs addon-fit.mjs "export class FitAddon {}"
vendor @xterm/xterm/css/xterm.css xterm.css "/* $missing */"
