"""A real PDS and PLC directory on loopback for the AT Protocol tests
(issue 18): tests/atproto/pds.mjs runs @did-plc/server (in memory) and
@atproto/pds (pinned in package.json) and creates the accounts asked for.
Nothing leaves loopback: the PDS has no crawlers, app view or email."""

import http.server
import json
import os
import socket
import struct
import subprocess
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "tests", "atproto", "pds.mjs")
START_TIMEOUT = 120  # a cold PDS on 2 busy cores takes seconds, not minutes


class Pds:
    """One PLC + PDS pair; .plc and .pds are their base URLs, .accounts
    maps a handle to {"handle", "did", "password", "accessJwt"}."""

    def __init__(self, data_dir, accounts):
        args = [f"{h}:{pw}" for h, pw in accounts]
        self.proc = subprocess.Popen(["node", SCRIPT, data_dir, *args], cwd=ROOT,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
        first = self._line(START_TIMEOUT)
        self.plc = first["plc"]
        self.pds = first["pds"]
        self.port = int(self.pds.rsplit(":", 1)[1])
        self.accounts = {a["handle"]: a for a in first["accounts"]}

    def _line(self, timeout):
        # The script answers every command with one line; readline blocks, so
        # a hung script is caught by the test's own timeout and the fixture's
        # kill, not here. Empty means it died.
        line = self.proc.stdout.readline()
        assert line, "tests/atproto/pds.mjs exited before answering (see stderr)"
        return json.loads(line)

    def command(self, op, **kw):
        self.proc.stdin.write(json.dumps({"op": op, **kw}) + "\n")
        self.proc.stdin.flush()
        got = self._line(60)
        assert "error" not in got, f"pds.mjs {op}: {got['error']}"
        return got

    def add_account(self, handle, password):
        a = self.command("account", handle=handle, password=password)
        self.accounts[handle] = a
        return a

    def get(self, url, host=None):
        """GET url; host overrides the Host header, as a resolver asking
        https://HANDLE/.well-known/atproto-did would send it."""
        req = urllib.request.Request(url)
        if host:
            req.add_header("Host", host)
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode()

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class DnsTxt:
    """A DNS server on 127.0.0.1 (UDP) that answers TXT queries from
    .records ({name: [txt, ...]}) and NXDOMAIN for every other name, so
    the resolver's "_atproto.HANDLE" step can be tested without leaving
    loopback."""

    def __init__(self):
        self.records = {}
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.addr = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                q, peer = self.sock.recvfrom(512)
            except OSError:
                return
            try:
                self.sock.sendto(self._answer(q), peer)
            except (OSError, IndexError, struct.error):
                pass

    def _answer(self, q):
        qid, = struct.unpack("!H", q[:2])
        i, labels = 12, []
        while q[i]:
            labels.append(q[i + 1:i + 1 + q[i]].decode().lower())
            i += 1 + q[i]
        question = q[12:i + 5]
        qtype, = struct.unpack("!H", q[i + 1:i + 3])
        txts = self.records.get(".".join(labels), []) if qtype == 16 else []
        flags = 0x8180 if txts else 0x8183  # NOERROR / NXDOMAIN
        out = struct.pack("!HHHHHH", qid, flags, 1, len(txts), 0, 0) + question
        for t in txts:
            b = t.encode()
            rdata = bytes([len(b)]) + b
            out += struct.pack("!HHHIH", 0xC00C, 16, 1, 60, len(rdata)) + rdata
        return out

    def close(self):
        self.sock.close()


class FakeHttp:
    """An HTTP server on 127.0.0.1 whose answers the test sets:
    .routes[path] = (status, body, delay_seconds). Stands in for a PDS,
    a did:web host or a PLC directory that answers garbage, slowly or with
    someone else's document."""

    def __init__(self):
        routes = self.routes = {}

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                status, body, delay = routes.get(self.path, (404, "not found", 0))
                if delay:
                    time.sleep(delay)
                if isinstance(body, (dict, list)):
                    body = json.dumps(body)
                data = body.encode() if isinstance(body, str) else body
                try:
                    self.send_response(status)
                    if data[:1] in (b"{", b"["):
                        self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up first, as it should

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
