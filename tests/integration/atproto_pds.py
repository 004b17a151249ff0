"""A real PDS and PLC directory on loopback for the AT Protocol tests
(issue 18): tests/atproto/pds.mjs runs @did-plc/server (in memory) and
@atproto/pds (pinned in package.json) and creates the accounts asked for.
Nothing leaves loopback: the PDS has no crawlers, app view or email."""

import json
import os
import subprocess
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
