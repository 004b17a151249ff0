#!/usr/bin/env python3
"""getSandbox on a PostgreSQL store (issue 22's LISTEN): a daemon that
keeps answers while it hears the store's notifications, against one that
reads the store every time (BASE: main's build, or any build without
daemon/cluster-listen.c).

One PostgreSQL server (Debian's, Unix socket), one database per daemon,
each daemon on its own 127.0.0.1 port with one busybox sandbox made
through its API. Rounds of `wrk -t2 -c64 -d D` on getSandbox, the two
daemons in a new random order every round; prints requests/s per round
and the load average. Asserts no number.

    bench/run-pg-read.py [-k ROUNDS] [-d SECONDS] [--base BUILD_DIR]   (root, after ninja -C build)
"""
import argparse
import http.client
import json
import os
import random
import re
import shutil
import subprocess
import tempfile
import time

from pgserver import start_pg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NEW = os.path.join(os.environ.get("PE_BUILD", os.path.join(ROOT, "build")), "pocketenv")


def run(*argv):
    return subprocess.run(list(argv), capture_output=True, text=True, check=True)


def call(port, token, nsid, params="", body=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    h = {"Authorization": f"Bearer {token}"}
    if body is not None:
        h["Content-Type"] = "application/json"
    c.request("POST" if body is not None else "GET", f"/xrpc/{nsid}{params}",
              json.dumps(body).encode() if body is not None else None, h)
    r = c.getresponse()
    return r.status, json.loads(r.read() or b"null")


def serve(binary, top, name, port, store):
    data = os.path.join(top, name)
    run(binary, "--data", data, "image", "build", "busybox")
    tok = os.path.join(top, f"{name}.token")
    p = subprocess.Popen([binary, "serve", "--listen", f"127.0.0.1:{port}", "--data", data,
                          "--token-file", tok, "--rate-limit", "0", "--idle-timeout", "0",
                          "--sandbox-net", "none", "--store", store],
                         stderr=open(os.path.join(top, f"{name}.log"), "w"))
    for _ in range(400):
        try:
            token = json.load(open(tok))["token"]
            if call(port, token, "io.pocketenv.server.getPublicKey")[0] == 200:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    st, sb = call(port, token, "io.pocketenv.sandbox.createSandbox",
                  body={"base": "busybox", "name": "bench"})
    assert st == 200, sb
    for _ in range(600):
        if call(port, token, "io.pocketenv.sandbox.getSandbox",
                f"?id={sb['id']}")[1]["sandbox"]["status"] == "RUNNING":
            break
        time.sleep(0.1)
    return p, token, sb["id"]


def wrk(port, token, sid, secs):
    out = run("wrk", "-t2", "-c64", f"-d{secs}s", "-H", f"Authorization: Bearer {token}",
              f"http://127.0.0.1:{port}/xrpc/io.pocketenv.sandbox.getSandbox?id={sid}").stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    assert m and not non2xx, out
    return float(m.group(1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-k", "--rounds", type=int, default=5)
    ap.add_argument("-d", "--seconds", type=int, default=5)
    ap.add_argument("--base", default="/work/main/build")
    args = ap.parse_args()
    bins = {"base (reads the store)": os.path.join(args.base, "pocketenv"),
            "new (kept while listening)": NEW}
    top = tempfile.mkdtemp(prefix="pocketenv-bench-pgread-", dir="/var/tmp")
    os.chmod(top, 0o755)
    procs, stop, daemons = [], None, {}
    try:
        urls, stop = start_pg(top, ["base", "new"])
        for (label, b), (name, port) in zip(bins.items(), [("base", 18931), ("new", 18932)]):
            p, token, sid = serve(b, top, name, port, urls[name])
            procs.append(p)
            daemons[label] = (port, token, sid)
        print(f"wrk -t2 -c64 -d{args.seconds}s getSandbox, req/s; loadavg before: "
              f"{open('/proc/loadavg').read().split()[:3]}")
        rows = {k: [] for k in daemons}
        for _ in range(args.rounds):
            order = list(daemons)
            random.shuffle(order)
            for k in order:
                rows[k].append(wrk(*daemons[k], args.seconds))
        print("| daemon | " + " | ".join(f"run {i + 1}" for i in range(args.rounds)) + " |")
        print("|---|" + "---:|" * args.rounds)
        for k, xs in rows.items():
            print(f"| {k} | " + " | ".join(f"{x:,.0f}" for x in xs) + " |")
        print(f"loadavg after: {open('/proc/loadavg').read().split()[:3]}")
    finally:
        for port, token, sid in daemons.values():
            call(port, token, "io.pocketenv.sandbox.deleteSandbox", f"?id={sid}", body={})
        for p in procs:
            p.terminate()
            p.wait(60)
        if stop:
            subprocess.run(stop, capture_output=True)
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    main()
