#!/usr/bin/env python3
"""The cost of an egress policy and its name-checking proxy (issue 20):
connection setup time and throughput of HTTP on port 80 from a sandbox,
with no policy (kernel NAT only) and with an allowlist (resolver, table,
and every connection through the daemon's proxy), interleaved round by
round so that both see the same load. Then the same for HTTPS on 443:
passed through by SNI (an allowlist) against terminated and re-encrypted
by the proxy (a secret bound to the host, its placeholder in a header),
with a Python TLS client run in each sandbox's network namespace
(busybox's TLS client cannot talk ECDSA).

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

# one web server: plain HTTP on port 80, or HTTPS on 443 given a
# certificate and its key; "/big/N" answers N bytes
WEB_SERVER = r"""
import http.server, socketserver, ssl, sys
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
tls = len(sys.argv) > 2
s = S((sys.argv[1], 443 if tls else 80), H)
if tls:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(sys.argv[2], sys.argv[3])
    s.socket = ctx.wrap_socket(s.socket, server_side=True)
print("ready", flush=True)
s.serve_forever()
"""

# run in a sandbox's network namespace: N HTTPS GETs (a connection each),
# then one download; prints ms per GET and MB/s
TLS_CLIENT = r"""
import socket, ssl, sys, time
addr, host, cafile, n, size, key = sys.argv[1:7]
n, size = int(n), int(size)
ctx = ssl.create_default_context(cafile=cafile)
ctx.options |= getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)
def get(path):
    with socket.create_connection((addr, 443)) as raw:
        with ctx.wrap_socket(raw, server_hostname=host) as t:
            t.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\nX-Key: %s\r\nConnection: close\r\n\r\n"
                       % (path, host, key)).encode())
            got = 0
            while True:
                b = t.recv(1 << 16)
                if not b:
                    return got
                got += len(b)
t0 = time.monotonic()
for _ in range(n):
    get("/")
t1 = time.monotonic()
got = get("/big/%d" % size)
t2 = time.monotonic()
assert got > size, got
print((t1 - t0) / n * 1000, size / 1048576 / (t2 - t1))
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
            env=dict(os.environ, POCKETENV_DNS_UPSTREAM=f"{SRV}:53",
                     POCKETENV_EGRESS_CA_FILE=os.path.join(tmp, "cert.pem")))
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

    def create(self, name, policy, secrets=None):
        body = {"base": "busybox", "name": name}
        if policy:
            body["networkPolicy"] = policy
        if secrets:
            body["secrets"] = secrets
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

    def sh(self, name, script):
        return self.call("io.pocketenv.sandbox.exec", {"id": name}, {"command": script})["stdout"]

    def pid(self, name):
        sid = self.call("io.pocketenv.sandbox.getSandbox", {"id": name})["sandbox"]["id"]
        p = subprocess.run([os.path.join(BUILD, "pocketenv"), "--data", self.data, "runtime",
                            "ls", "--json"], capture_output=True, text=True, check=True)
        return next(s["pid"] for s in json.loads(p.stdout) if s["name"] == sid)


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
        cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
        sh("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
           "-nodes", "-days", "2", "-subj", "/CN=bench.test", "-keyout", key, "-out", cert,
           "-addext", "subjectAltName=DNS:bench.test")
        for src, args in ((DNS_SERVER, []), (WEB_SERVER, []), (WEB_SERVER, [cert, key])):
            p = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", src, SRV, *args],
                                 stdout=subprocess.PIPE, text=True)
            procs.append(p)
            assert p.stdout.readline() == "ready\n"
        d = Daemon(tmp)
        d.create("off", None)
        d.create("on", {"mode": "allowlist", "allowDomains": ["bench.test"]})
        d.create("tls", {"mode": "allowlist", "allowDomains": ["bench.test"],
                         "secrets": [{"name": "KEY", "hosts": ["bench.test"]}]},
                 [{"name": "KEY", "value": "bench-secret-value"}])
        ca = os.path.join(tmp, "sandbox-ca.pem")
        with open(ca, "w") as f:
            f.write(d.sh("tls", "cat /etc/ssl/certs/pocketenv-egress-ca.pem"))
        placeholder = d.sh("tls", "echo $KEY").strip()
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
        # HTTPS: pass-through (SNI checked) against intercepted (a bound secret)
        tres = {"on": ([], []), "tls": ([], [])}
        n_tls = max(1, a.n // 4)  # handshakes cost the client's CPU too
        for r in range(a.r):
            for name in ("on", "tls") if r % 2 == 0 else ("tls", "on"):
                d.sh(name, "nslookup bench.test >/dev/null")
                out = subprocess.run(
                    ["nsenter", "-t", str(d.pid(name)), "-n", sys.executable, "-c", TLS_CLIENT,
                     SRV, "bench.test", ca if name == "tls" else cert, str(n_tls), str(size),
                     placeholder if name == "tls" else "none"],
                    capture_output=True, text=True, check=True).stdout.split()
                tres[name][0].append(float(out[0]))
                tres[name][1].append(float(out[1]))
        print(f"== HTTPS on port 443, {a.r} rounds interleaved ({n_tls} connections each; "
              f"{a.m} MB downloads)")
        print("%-38s %22s %18s" % ("", "handshake + GET (ms)", "download (MB/s)"))
        for name, what in (("on", "allowlist, passed through by SNI"),
                           ("tls", "bound secret: terminated + re-encrypted")):
            ms, mbs = tres[name]
            print("%-38s %10.2f (%.2f-%.2f) %8.0f (%.0f-%.0f)" % (
                what, sorted(ms)[len(ms) // 2], min(ms), max(ms), sorted(mbs)[len(mbs) // 2],
                min(mbs), max(mbs)))
    finally:
        if d is not None:
            for name in ("off", "on", "tls"):
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
