#!/usr/bin/env python3
"""Many daemons (issue 22): the cost of the forwarding hop.

Two daemons, a and c, on one PostgreSQL server (Debian's, Unix socket),
each in a network namespace of its own joined by a bridge (the same setup
as tests/integration/test_cluster.py). One sandbox runs on c. Every round
makes, in a new random order, one XRPC exec of `true` through c (the
owning node) and one through a (forwarded to c), each on its own
keep-alive connection, and reports medians with p10/p90 and the ratio to
the owning node. Prints; asserts no duration.

    bench/run-cluster.py [-r ROUNDS] [-w WARMUP]     (as root, after ninja -C build)

Needs: postgresql, iproute2, util-linux (nsenter). Uses 10.232.N.0/24.
"""
import argparse
import base64
import glob
import http.client
import json
import os
import pwd
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(os.environ.get("PE_BUILD", os.path.join(ROOT, "build")), "pocketenv")
TAG = str(os.getpid() % 10000)
SUBNET = f"10.232.{os.getpid() % 250}"
HUB = f"pe-bc-hub-{TAG}"


def run(*argv, check=True):
    return subprocess.run(list(argv), capture_output=True, text=True, check=check)


def start_pg(top):
    bindir = sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1]
    user = pwd.getpwnam("postgres")
    data = os.path.join(top, "pg")
    os.mkdir(data, 0o700)
    os.chown(data, user.pw_uid, user.pw_gid)
    as_pg = ["runuser", "-u", "postgres", "--"]
    run(*as_pg, f"{bindir}/initdb", "-D", data, "-U", "postgres", "-A", "trust")
    with open(os.path.join(data, "postgresql.conf"), "a") as f:
        f.write(f"listen_addresses = ''\nunix_socket_directories = '{data}'\nfsync = off\n")
    run(*as_pg, f"{bindir}/pg_ctl", "-D", data, "-l", os.path.join(data, "log"), "-w", "start")
    run(*as_pg, f"{bindir}/createdb", "-h", data, "-U", "postgres", "bench")
    stop = [*as_pg, f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"]
    return f"postgresql:///bench?host={data}&user=postgres", stop


def net_up(names):
    run("ip", "netns", "add", HUB)
    run("ip", "-n", HUB, "link", "add", "br0", "type", "bridge")
    run("ip", "-n", HUB, "link", "set", "br0", "up")
    run("ip", "link", "add", f"pebc{TAG}h", "type", "veth", "peer", "name", "to-host", "netns",
        HUB)
    run("ip", "-n", HUB, "link", "set", "to-host", "master", "br0", "up")
    run("ip", "addr", "add", f"{SUBNET}.254/24", "dev", f"pebc{TAG}h")
    run("ip", "link", "set", f"pebc{TAG}h", "up")
    for i, name in enumerate(names, 1):
        ns = f"pe-bc-{name}-{TAG}"
        run("ip", "netns", "add", ns)
        run("ip", "-n", ns, "link", "set", "lo", "up")
        run("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", f"to-{name}",
            "netns", HUB)
        run("ip", "-n", HUB, "link", "set", f"to-{name}", "master", "br0", "up")
        run("ip", "-n", ns, "addr", "add", f"{SUBNET}.{i}/24", "dev", "eth0")
        run("ip", "-n", ns, "link", "set", "eth0", "up")


def net_down(names):
    run("ip", "link", "del", f"pebc{TAG}h", check=False)
    for name in names:
        run("ip", "netns", "del", f"pe-bc-{name}-{TAG}", check=False)
    run("ip", "netns", "del", HUB, check=False)


def call(conn, token, nsid, params="", body=None, post=None):
    data = json.dumps(body).encode() if body is not None else None
    h = {"Authorization": f"Bearer {token}"}
    if data is not None:
        h["Content-Type"] = "application/json"
    post = data is not None if post is None else post
    conn.request("POST" if post else "GET", f"/xrpc/{nsid}{params}", data or b"" if post else None,
                 h)
    r = conn.getresponse()
    return r.status, json.loads(r.read() or b"null")


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-r", "--rounds", type=int, default=200)
    ap.add_argument("-w", "--warmup", type=int, default=20)
    args = ap.parse_args()
    names = ["a", "c"]
    top = tempfile.mkdtemp(prefix="pocketenv-bench-cluster-", dir="/var/tmp")
    os.chmod(top, 0o755)  # the postgres user reaches its directory in it
    procs, stop_pg = [], None
    try:
        store, stop_pg = start_pg(top)
        key_file = os.path.join(top, "cluster.key")
        with open(key_file, "wb") as f:
            f.write(base64.b64encode(secrets.token_bytes(48)))
        os.chmod(key_file, 0o600)
        net_up(names)
        for i, name in enumerate(names, 1):
            data = os.path.join(top, name)
            run(BIN, "--data", data, "image", "build", "busybox")
            if i > 1:
                shutil.copytree(os.path.join(top, "a", "keys"), os.path.join(data, "keys"))
            procs.append(subprocess.Popen(
                ["nsenter", f"--net=/run/netns/pe-bc-{name}-{TAG}", BIN, "serve", "--listen",
                 f"{SUBNET}.{i}:8789", "--data", data, "--token-file",
                 os.path.join(top, f"{name}.token"), "--rate-limit", "0", "--sandbox-net",
                 "none", "--store", store, "--cluster-key-file", key_file, "--node-name", name],
                stderr=open(os.path.join(top, f"{name}.log"), "w")))
            for _ in range(200):
                if os.path.exists(os.path.join(top, f"{name}.token")):
                    try:
                        http.client.HTTPConnection(f"{SUBNET}.{i}", 8789, timeout=2).request(
                            "GET", "/healthz")
                        break
                    except OSError:
                        pass
                time.sleep(0.05)
        token = json.load(open(os.path.join(top, "a.token")))["token"]
        ca = http.client.HTTPConnection(f"{SUBNET}.1", 8789, timeout=60)
        cc = http.client.HTTPConnection(f"{SUBNET}.2", 8789, timeout=60)
        st, sb = call(cc, token, "io.pocketenv.node.drainNode", body={"name": "a"})
        st, sb = call(cc, token, "io.pocketenv.sandbox.createSandbox",
                      body={"base": "busybox", "name": "bench"})
        assert st == 200, sb
        for _ in range(600):
            st, o = call(cc, token, "io.pocketenv.sandbox.getSandbox", f"?id={sb['id']}")
            if o["sandbox"]["status"] == "RUNNING":
                break
            time.sleep(0.1)
        params = f"?id={sb['id']}"
        times = {"c (owning node)": [], "a -> c (forwarded)": []}
        conns = {"c (owning node)": cc, "a -> c (forwarded)": ca}
        for r in range(args.warmup + args.rounds):
            order = list(times)
            random.shuffle(order)
            for k in order:
                t = time.monotonic()
                st, o = call(conns[k], token, "io.pocketenv.sandbox.exec", params,
                             {"command": "true"})
                dt = time.monotonic() - t
                assert st == 200 and o["exitCode"] == 0, o
                if r >= args.warmup:
                    times[k].append(dt * 1000)
        commit = run("git", "-C", ROOT, "rev-parse", "--short", "HEAD").stdout.strip()
        print(f"exec round trip (XRPC io.pocketenv.sandbox.exec `true`), commit {commit}, "
              f"{args.rounds} rounds after {args.warmup} warm-up, interleaved and shuffled\n")
        print("| path | median ms | p10 | p90 | ratio |")
        print("|---|---|---|---|---|")
        base = statistics.median(times["c (owning node)"])
        for k, xs in times.items():
            med = statistics.median(xs)
            print(f"| {k} | {med:.2f} | {pct(xs, 0.1):.2f} | {pct(xs, 0.9):.2f} | "
                  f"{med / base:.2f} |")
        call(cc, token, "io.pocketenv.sandbox.deleteSandbox", params, post=True)
    finally:
        for p in procs:
            p.terminate()
            p.wait(30)
        if stop_pg:
            run(*stop_pg, check=False)
        net_down(names)
        shutil.rmtree(top, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
