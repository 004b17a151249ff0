#!/usr/bin/env python3
"""CPU time per run of each command of an altbench variants file (issue 21).

    bench/cpu-per-run.py -f VARIANTS [-r ROUNDS] [-b BASELINE_LABEL]

Runs every '[label] CMD ...' line once per round, rounds shuffled, and sums
the user + system time the kernel charges to each run with the processes
it waited for (wait4's rusage: a sandbox's init and the command in it are
the CLI's children, and the kernel work of its mounts, namespaces and
cgroups is charged to whoever did it). On a shared host the wall time
follows the run queue; the CPU a start costs does not, so this says what
a change saved when the medians are noise. Nothing is asserted.
"""
import argparse
import os
import random
import re
import statistics
import subprocess
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-f", required=True)
    ap.add_argument("-r", type=int, default=100)
    ap.add_argument("-b", default=None)
    a = ap.parse_args()
    variants = []
    for line in open(a.f):
        m = re.match(r"\s*\[([^\]]+)\]\s*(.+)", line)
        if m:
            variants.append((m.group(1), m.group(2).split()))
    if not variants:
        sys.exit("no variants in " + a.f)
    cpu = {label: [] for label, _ in variants}
    for _ in range(a.r):
        order = variants[:]
        random.shuffle(order)
        for label, argv in order:
            p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            _, status, ru = os.wait4(p.pid, 0)
            p.returncode = os.waitstatus_to_exitcode(status)
            if p.returncode != 0:
                sys.exit(f"{label}: exit {p.returncode}")
            cpu[label].append((ru.ru_utime + ru.ru_stime) * 1000)
    base = a.b or variants[0][0]
    bmean = statistics.mean(cpu[base])
    print(f"| variant | CPU ms per run, mean | median | × {base} |")
    print("|---|---:|---:|---:|")
    for label, _ in variants:
        m = statistics.mean(cpu[label])
        print(f"| {label} | {m:.2f} | {statistics.median(cpu[label]):.2f} | {m / bmean:.2f} |")


if __name__ == "__main__":
    main()
