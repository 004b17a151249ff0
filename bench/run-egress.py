#!/usr/bin/env python3
"""The cost of an egress policy and its name-checking proxy (issue 20):
connection setup time and throughput of HTTP on port 80 from a sandbox,
with no policy (kernel NAT only) and with an allowlist (resolver, table,
and every connection through the daemon's proxy), interleaved round by
round so that both see the same load.

Everything stays on this machine: an "internet" namespace this script
makes (10.125.0.0/24, test-only) with a DNS server (the daemon's upstream)
and an HTTP server, reached by two sandboxes of a daemon on loopback.

  bench/run-egress.py [-r ROUNDS (3)] [-n CONNECTIONS (200)] [-m MEGABYTES (200)]

Needs root, iproute2 and a build in $BUILD (default build/).
"""
import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("BUILD", os.path.join(REPO, "build"))
HOST, SRV = "10.125.0.1", "10.125.0.2"

DNS_SERVER = r"""
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 53))
print("ready", flush=True)
while True:
    q, peer = s.recvfrom(4096)
    i = 12
    while q[i]:
        i += 1 + q[i]
    qtype = struct.unpack("!H", q[i + 1:i + 3])[0]
    ans = (b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton(sys.argv[1])
           if qtype == 1 else b"")
    s.sendto(q[:2] + struct.pack("!HHHHH", 0x8180, 1, 1 if ans else 0, 0, 0) + q[12:i + 5] + ans,
             peer)
"""

HTTP_SERVER = r"""
import http.server, socketserver, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        n = int(self.path[5:]) if self.path.startswith("/big/") else 2
        self.send_response(200)
        self.send_header("Content-Length", str(n))
        self.end_headers()
        chunk = b"x" * 65536
        while n > 0:
            self.wfile.write(chunk[:n])
            n -= 65536
    def log_message(self, *a):
        pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    request_queue_size = 128
s = S((sys.argv[1], 80), H)
print("ready", flush=True)
s.serve_forever()
"""


def sh(*cmd):
    subprocess.run(cmd, check=True, capture_output=True)


class Daemon:
    def __init__(self, tmp):
        self.data = os.path.join(tmp, "data")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.url = "http://127.0.0.1:%d" % s.getsockname()[1]
        tok = os.path.join(tmp, "token.json")
        sh(os.path.join(BUILD, "pocketenv"), "--data", self.data, "image", "build", "busybox")
        self.log = open(os.path.join(tmp, "daemon.log"), "w")
        self.proc = subprocess.Popen(
            [os.path.join(BUILD, "pocketenv"), "serve", "--listen", self.url[7:], "--data",
             self.data, "--token-file", tok], stderr=self.log,
            env=dict(os.environ, POCKETENV_DNS_UPSTREAM=f"{SRV}:53"))
        for _ in range(100):
            if os.path.exists(tok) and os.path.getsize(tok) > 0:
                break
            time.sleep(0.1)
        time.sleep(0.5)
        self.token = json.load(open(tok))["token"]

    def call(self, nsid, params=None, body=None):
        q = "?" + urllib.parse.urlencode(params) if params else ""
        req = urllib.request.Request(f"{self.url}/xrpc/{nsid}{q}",
                                     data=json.dumps(body).encode() if body is not None else None,
                                     method="POST" if body is not None else "GET")
        req.add_header("Authorization", f"Bearer {self.token}")
        if body is not None:
            req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=600) as r:
            return json.loads(r.read() or b"null")

    def create(self, name, policy):
        body = {"base": "busybox", "name": name}
        if policy:
            body["networkPolicy"] = policy
        self.call("io.pocketenv.sandbox.createSandbox", body=body)
        for _ in range(600):
            sb = self.call("io.pocketenv.sandbox.getSandbox", {"id": name})["sandbox"]
            if sb["status"] == "RUNNING":
                return
            time.sleep(0.2)
        raise SystemExit(f"{name} did not start")

    def timed(self, name, script):
        """Seconds the script took inside the sandbox (by /proc/uptime)."""
        out = self.call("io.pocketenv.sandbox.exec", {"id": name},
                        {"command": "a=$(cut -d' ' -f1 /proc/uptime); " + script +
                         "; b=$(cut -d' ' -f1 /proc/uptime); echo $a $b"})["stdout"].split()
        return float(out[-1]) - float(out[-2])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-r", type=int, default=3)
    ap.add_argument("-n", type=int, default=200)
    ap.add_argument("-m", type=int, default=200)
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run-egress.py: needs root")
    tmp = tempfile.mkdtemp(prefix="pe-bench-egress.")
    tag = os.getpid() % 100000
    ns, hif, nif = f"pt-be-{tag}", f"pt-beh-{tag}", f"pt-ben-{tag}"
    procs, d = [], None
    try:
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", hif, "type", "veth", "peer", "name", nif)
        sh("ip", "link", "set", nif, "netns", ns)
        sh("ip", "addr", "add", f"{HOST}/24", "dev", hif)
        sh("ip", "link", "set", hif, "up")
        sh("ip", "-n", ns, "addr", "add", f"{SRV}/24", "dev", nif)
        sh("ip", "-n", ns, "link", "set", nif, "up")
        for src in (DNS_SERVER, HTTP_SERVER):
            p = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", src, SRV],
                                 stdout=subprocess.PIPE, text=True)
            procs.append(p)
            assert p.stdout.readline() == "ready\n"
        d = Daemon(tmp)
        d.create("off", None)
        d.create("on", {"mode": "allowlist", "allowDomains": ["bench.test"]})
        req = "printf 'GET %s HTTP/1.1\\r\\nHost: bench.test\\r\\nConnection: close\\r\\n\\r\\n'"
        conns = (f"nslookup bench.test >/dev/null; i=0; while [ $i -lt {a.n} ]; do "
                 f"{req % '/'} | nc {SRV} 80 >/dev/null; i=$((i+1)); done")
        size = a.m * 1024 * 1024
        bulk = f"nslookup bench.test >/dev/null; {req % f'/big/{size}'} | nc {SRV} 80 >/dev/null"
        res = {"off": ([], []), "on": ([], [])}
        for r in range(a.r):
            for name in ("off", "on") if r % 2 == 0 else ("on", "off"):
                res[name][0].append(d.timed(name, conns) / a.n * 1000)
                res[name][1].append(a.m / d.timed(name, bulk))
        print(f"== HTTP on port 80 from a sandbox, {a.r} rounds interleaved "
              f"({a.n} connections each; {a.m} MB downloads)")
        print("%-38s %22s %18s" % ("", "connection + GET (ms)", "download (MB/s)"))
        for name, what in (("off", "no policy (kernel NAT)"),
                           ("on", "allowlist + name-checking proxy")):
            ms, mbs = res[name]
            print("%-38s %10.2f (%.2f-%.2f) %8.0f (%.0f-%.0f)" % (
                what, sorted(ms)[len(ms) // 2], min(ms), max(ms), sorted(mbs)[len(mbs) // 2],
                min(mbs), max(mbs)))
    finally:
        if d is not None:
            for name in ("off", "on"):
                try:
                    d.call("io.pocketenv.sandbox.deleteSandbox", {"id": name}, {})
                except Exception:  # noqa: BLE001 - best effort on the way out
                    pass
            d.proc.terminate()
            d.proc.wait()
        for p in procs:
            p.kill()
            p.wait()
        subprocess.run(["ip", "link", "del", hif], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
