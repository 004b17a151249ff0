#!/usr/bin/env python3
"""Many daemons (issue 22): the cost of the forwarding hop.

Two daemons, a and c, on one PostgreSQL server (Debian's, Unix socket),
each in a network namespace of its own joined by a bridge (the same setup
as tests/integration/test_cluster.py). One sandbox runs on c. Every round
makes, in a new random order, one XRPC exec of `true` through c (the
owning node) and one through a (forwarded to c), each on its own
keep-alive connection; then the same for a streaming exec of `true`
(/exec/:id/ws: WebSocket open, command, output and exit code, close) and
for terminal echo (one /tty/:id/ws session per path, kept open: a few
keystrokes out, their echo back). Reports medians with p10/p90 and the
ratio to the owning node. Prints; asserts no duration.

    bench/run-cluster.py [-r ROUNDS] [-w WARMUP]     (as root, after ninja -C build)

Needs: postgresql, iproute2, util-linux (nsenter). Uses 10.232.N.0/24.
"""
import argparse
import base64
import http.client
import json
import os
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from wsclient import WS  # noqa: E402 (the tests' standard-library client)
from pgserver import start_pg  # noqa: E402 (bench/, the script's own folder)
BIN = os.path.join(os.environ.get("PE_BUILD", os.path.join(ROOT, "build")), "pocketenv")
TAG = str(os.getpid() % 10000)
SUBNET = f"10.232.{os.getpid() % 250}"
HUB = f"pe-bc-hub-{TAG}"


def run(*argv, check=True):
    return subprocess.run(list(argv), capture_output=True, text=True, check=check)


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


def table(title, times, base_key):
    print(f"\n{title}\n")
    print("| path | median ms | p10 | p90 | ratio |")
    print("|---|---|---|---|---|")
    base = statistics.median(times[base_key])
    for k, xs in times.items():
        med = statistics.median(xs)
        print(f"| {k} | {med:.2f} | {pct(xs, 0.1):.2f} | {pct(xs, 0.9):.2f} | "
              f"{med / base:.2f} |")


def stream_exec(host, sid, token):
    """One streaming exec of `true`, from the WebSocket's open to its close."""
    ws = WS(8789, f"/exec/{sid}/ws", headers={"Authorization": f"Bearer {token}"}, host=host)
    assert ws.status == 101, ws.head
    ws.send(json.dumps({"argv": ["true"]}))
    code = None
    while ws.closed is None:
        op, p = ws.recv(60)
        if op == 1 and json.loads(p).get("type") == "exit":
            code = json.loads(p)["code"]
    ws.close()
    assert code == 0


def echo(ws, n):
    """Keystrokes out, their echo (the PTY's) back; then the line is killed."""
    mark = f"k{n:07d}"
    ws.send(mark)
    ws.read_until(mark, timeout=60)
    ws.send("\x15")


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
        urls, stop_pg = start_pg(top, ["bench"])
        store = urls["bench"]
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
        hosts = {"c (owning node)": f"{SUBNET}.2", "a -> c (forwarded)": f"{SUBNET}.1"}
        streams = {k: [] for k in hosts}
        echoes = {k: [] for k in hosts}
        terms = {k: WS(8789, f"/tty/{sb['id']}/ws?sessionId=bench-{i}&token={token}", host=h)
                 for i, (k, h) in enumerate(hosts.items())}
        for k, ws in terms.items():
            assert ws.status == 101, ws.head
            echo(ws, 0)
        for r in range(args.warmup + args.rounds):
            order = list(hosts)
            random.shuffle(order)
            for k in order:
                t = time.monotonic()
                stream_exec(hosts[k], sb["id"], token)
                t2 = time.monotonic()
                echo(terms[k], r + 1)
                t3 = time.monotonic()
                if r >= args.warmup:
                    streams[k].append((t2 - t) * 1000)
                    echoes[k].append((t3 - t2) * 1000)
        for ws in terms.values():
            ws.close()
        commit = run("git", "-C", ROOT, "rev-parse", "--short", "HEAD").stdout.strip()
        print(f"commit {commit}, {args.rounds} rounds after {args.warmup} warm-up, "
              "interleaved and shuffled")
        table("exec round trip (XRPC io.pocketenv.sandbox.exec `true`)", times,
              "c (owning node)")
        table("streaming exec of `true` (/exec/:id/ws, open to close)", streams,
              "c (owning node)")
        table("terminal echo (/tty/:id/ws, keystrokes to their echo)", echoes,
              "c (owning node)")
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
