#!/usr/bin/env python3
"""embed-text.py IN OUT SYMBOL: write a C file defining
`const char SYMBOL[]` with the bytes of IN (the build embeds
templates/pins.json so that the binaries carry their pins)."""
import sys

src, out, sym = sys.argv[1:4]
data = open(src, "rb").read()
with open(out, "w") as f:
    f.write(f"/* Generated from {src.split('/')[-1]} by tools/embed-text.py: do not edit. */\n")
    f.write(f"const char {sym}[] = {{\n")
    for i in range(0, len(data), 16):
        f.write("    " + ", ".join(str(b) for b in data[i:i + 16]) + ",\n")
    f.write("    0};\n")
