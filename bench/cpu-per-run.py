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

wait4 misses what a command does not reap itself: bubblewrap's pid-1
process and the command in it are gone from its rusage (they are not
waited for through bwrap), so bwrap reads about 2 x too cheap. With
--perf each run goes under `perf stat -e task-clock`, which counts every
process the run started, reaped or not: use it for bwrap.
"""
import argparse
import os
import random
import re
import statistics
import subprocess
import sys


def rusage_ms(label, argv):
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, ru = os.wait4(p.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.exit(f"{label}: exit {code}")
    return (ru.ru_utime + ru.ru_stime) * 1000


def perf_ms(label, argv):
    p = subprocess.run(["perf", "stat", "-x", ",", "-e", "task-clock", "--"] + argv,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        sys.exit(f"{label}: exit {p.returncode}: {p.stderr.strip()[-200:]}")
    for line in p.stderr.splitlines():
        f = line.split(",")
        if len(f) > 2 and f[2] == "task-clock":
            return float(f[0])
    sys.exit(f"{label}: no task-clock in perf's output")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-f", required=True)
    ap.add_argument("-r", type=int, default=100)
    ap.add_argument("-b", default=None)
    ap.add_argument("--perf", action="store_true", help="CPU from perf stat task-clock")
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
            cpu[label].append(perf_ms(label, argv) if a.perf else rusage_ms(label, argv))
    base = a.b or variants[0][0]
    bmean = statistics.mean(cpu[base])
    print(f"| variant | CPU ms per run, mean | median | × {base} |")
    print("|---|---:|---:|---:|")
    for label, _ in variants:
        m = statistics.mean(cpu[label])
        print(f"| {label} | {m:.2f} | {statistics.median(cpu[label]):.2f} | {m / bmean:.2f} |")


if __name__ == "__main__":
    main()
