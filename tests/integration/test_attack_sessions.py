"""Attacks on open sessions (issue 11, points 6 and 8, and point 1 for
terminals): a revoked token must not keep what it opened, one user must
not fill the terminal table for everyone, and a browser page must not be
able to open a terminal with an API token it found in a URL.

Real daemons on loopback, real sandboxes, the raw WebSocket and SSE
clients of wsclient.py; every wait has a deadline.
"""
import base64
import hashlib
import json
import os
import socket
import subprocess
import urllib.error
import urllib.request

from conftest import BIN, wait_for
from test_daemon import serving
from test_ports import WS_ECHO
from wsclient import SSE, WS


def closed(ws, timeout):
    """The close code of ws, or None if it is still open after timeout."""
    code, _, _ = ws.wait_close(timeout)
    return code


class Users:
    """Tokens of other users, whose sandboxes are deleted on the way out
    (the daemon fixture deletes only the owner's)."""

    def __init__(self, d, *dids):
        self.d, self.dids = d, dids
        self.tokens = [d.token_for(did) for did in dids]

    def __enter__(self):
        return self.tokens

    def __exit__(self, *exc):
        for did in self.dids:  # fresh tokens: the test may have revoked the old ones
            tok = wait_for(lambda: (lambda t: t if self.d.call(
                "io.pocketenv.actor.getProfile", token=t)[0] == 200 else None)(
                    self.d.token_for(did)), 10, f"a fresh token of {did}")
            st, o = self.d.call("io.pocketenv.actor.getActorSandboxes",
                                {"did": did, "limit": 100}, token=tok)
            for sb in (o or {}).get("sandboxes", []):
                self.d.sandbox("deleteSandbox", sb["id"], token=tok)


def running(d, token, name):
    st, sb = d.call("io.pocketenv.sandbox.createSandbox",
                    body={"base": "busybox", "name": name}, token=token)
    assert st == 200, sb
    return d.wait_status(name, ["RUNNING"], token=token)["id"]


def raw_ws_through_preview(port, host, token):
    """A WebSocket handshake through the preview proxy with a Bearer token;
    the open socket once the 101 came."""
    key = base64.b64encode(os.urandom(16)).decode()
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall((f"GET /chat HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
               f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            break
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        s.close()
        return None
    return s




def socket_closed(s, timeout):
    s.settimeout(timeout)
    try:
        return s.recv(1) == b""
    except (socket.timeout, TimeoutError):
        return False
    except ConnectionResetError:
        return True


def status_of(d, method, path, token, body=None, headers=None):
    req = urllib.request.Request(d.url + path, data=body, method=method,
                                 headers={"Authorization": f"Bearer {token}", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def d_post(d, path, token, headers):
    """A POST with an empty JSON object; the answer's body."""
    req = urllib.request.Request(d.url + path, data=b"{}", method="POST",
                                 headers={"Authorization": f"Bearer {token}",
                                          "Content-Type": "application/json", **headers})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.read()


def test_revoking_a_token_ends_what_it_opened(tmp_path):
    """Point 8: a terminal WebSocket, a Cloudflare-style terminal, an SSE
    terminal, /ssh WebSocket and SSE viewers and a WebSocket through a
    preview, opened with alice's tokens, end within a tick of `pocketenv
    token revoke`; bob's stay."""
    alice, bob = "did:key:zSessionsAlice", "did:key:zSessionsBob"
    with serving(tmp_path, extra=("--tick", "0.2")) as d, Users(d, alice, bob) as (a, b):
        aid, bid = running(d, a, "a-box"), running(d, b, "b-box")
        st, term = d.call("io.pocketenv.actor.getTerminalToken", token=a)
        assert st == 200
        port = int(d.url.rsplit(":", 1)[1])
        a_ws = WS(port, f"/tty/{aid}/ws?sessionId=w&token={a}")
        a_cf = WS(port, f"/v1/sandboxes/{aid}/ws/terminal?session=c&t={term['token']}")
        a_sse = SSE(port, f"/tty/{aid}/stream?sessionId=s", {"Authorization": f"Bearer {a}"})
        b_ws = WS(port, f"/tty/{bid}/ws?sessionId=w&token={b}")
        # upstream's /ssh gateway: a WebSocket (as its CLI) and an SSE stream
        a_ssh = [json.loads(d_post(d, "/ssh/connect", a, {"X-Sandbox-Id": aid}))["sessionId"]
                 for _ in range(2)]
        a_ssh_ws = WS(port, f"/ssh/{a_ssh[0]}/ws?token={a}")
        a_ssh_sse = SSE(port, f"/ssh/stream/{a_ssh[1]}", {"Authorization": f"Bearer {a}"})
        for w in (a_ws, a_cf, b_ws, a_ssh_ws):
            assert w.status == 101, w.head
        assert a_sse.status == 200 and a_ssh_sse.status == 200
        # A WebSocket through alice's preview.
        echo = WS_ECHO.replace("'", "'\\''")
        st, out = d.sandbox("exec", aid, {"command": f"printf '%s' '{echo}' > /tmp/ws-echo && "
                                          "chmod +x /tmp/ws-echo && (nc -ll -p 9000 -e "
                                          "/tmp/ws-echo >/dev/null 2>&1 </dev/null &)"},
                            token=a)
        assert st == 200 and out["exitCode"] == 0, out
        st, p = d.call("io.pocketenv.sandbox.exposePort", {"id": aid}, {"port": 9000}, token=a)
        assert st == 200, p
        host = p["previewUrl"].split("//", 1)[1].rstrip("/")
        a_proxy = wait_for(lambda: raw_ws_through_preview(port, host, a), 15, "preview WS")

        r = subprocess.run([BIN, "token", "revoke", "--did", alice, "--data", d.data],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        # Within a tick (0.2 s) plus slack for a loaded machine.
        assert closed(a_ws, 10) == 1008 and a_ws.closed[1] == "token revoked"
        assert closed(a_cf, 10) == 1008
        assert socket_closed(a_proxy, 10), "the proxied WebSocket outlived the revocation"
        events = [ev for ev, _ in a_sse.events(10)]
        assert "error" in events and a_sse.ended, events
        assert closed(a_ssh_ws, 10) == 1008 and a_ssh_ws.closed[1] == "token revoked"
        events = [ev for ev, _ in a_ssh_sse.raw_events(10)]
        assert "error" in events and a_ssh_sse.ended, events
        # and the revoked token can no longer type into, or end, those sessions
        for sid in a_ssh:
            st = status_of(d, "POST", f"/ssh/input/{sid}", a, b'{"data":"x"}')
            assert st == 401, st
        # Bob is untouched: his terminal still answers.
        b_ws.send("echo still-$((6*7))\n")
        b_ws.read_until("still-42", timeout=15)
        for c in (a_ws, a_cf, b_ws, a_sse, a_ssh_ws, a_ssh_sse):
            c.close()
        a_proxy.close()


def test_one_user_cannot_take_every_terminal(tmp_path):
    """Point 6: with --terminals-per-user 3, bob's abandoned sessions are
    reclaimed (his oldest first) when he opens more, his watched ones are
    kept and a 4th is refused with 429, and alice opens hers all along."""
    alice, bob = "did:key:zTermAlice", "did:key:zTermBob"
    with serving(tmp_path, extra=("--terminals-per-user", "3")) as d, \
            Users(d, alice, bob) as (a, b):
        aid, bid = running(d, a, "a-term"), running(d, b, "b-term")
        port = int(d.url.rsplit(":", 1)[1])

        def open_b(name):
            return WS(port, f"/tty/{bid}/ws?sessionId={name}&token={b}")

        def mark(ws, word):  # a variable only that shell has
            ws.send(f"export MARK={word}; echo set-$MARK\n")
            ws.read_until(f"set-{word}")

        # Bob opens and abandons many sessions: each new one past 3 ends his
        # oldest abandoned one.
        for i in range(6):
            w = open_b(f"s{i}")
            assert w.status == 101, w.head
            mark(w, f"m{i}")
            w.close()
        # s0..s2 were reclaimed; s3..s5 live on with their shells.
        w = open_b("s5")
        w.send("echo got-$MARK\n")
        w.read_until("got-m5")
        w.close()
        w = open_b("s0")  # a new shell: the old one was reclaimed
        w.send("echo got-${MARK:-none}\n")
        w.read_until("got-none")
        # Three watched sessions: a fourth is refused, nothing is reclaimed.
        held = [w] + [open_b(f"h{i}") for i in range(2)]
        assert all(h.status == 101 for h in held)
        extra = open_b("h9")
        assert extra.status == 429, extra.head
        assert b"RateLimitExceeded" in extra.body
        # Alice is not affected by any of it.
        mine = WS(port, f"/tty/{aid}/ws?sessionId=x&token={a}")
        assert mine.status == 101, mine.head
        mine.send("echo alice-$((2+2))\n")
        mine.read_until("alice-4")
        for c in held + [mine, extra]:
            c.close()


def test_api_token_in_a_url_only_for_non_browser_websockets(tmp_path):
    """Point 1 for terminals: a browser (it always sends Origin on a
    WebSocket) or an event stream may put only a 120 s terminal token in a
    URL; upstream's CLI (?token= on a WebSocket, no Origin) keeps working."""
    with serving(tmp_path) as d:
        sid = running(d, d.token, "urlbox")
        port = int(d.url.rsplit(":", 1)[1])
        st, term = d.call("io.pocketenv.actor.getTerminalToken")
        evil = {"Origin": f"http://8080-x-abcdefghij.localhost:{port}"}
        w = WS(port, f"/tty/{sid}/ws?sessionId=o&token={d.token}", headers=evil)
        assert w.status == 401 and b"terminal token" in w.body, w.head
        w = WS(port, f"/tty/{sid}/ws?sessionId=o&token={term['token']}", headers=evil)
        assert w.status == 101
        w.close()
        s = SSE(port, f"/tty/{sid}/stream?sessionId=o&token={d.token}")
        assert s.status == 401
        s.close()
        s = SSE(port, f"/tty/{sid}/stream?sessionId=o&t={term['token']}")
        assert s.status == 200
        s.close()
        w = WS(port, f"/tty/{sid}/ws?sessionId=o&token={d.token}")  # upstream's CLI
        assert w.status == 101
        w.close()
