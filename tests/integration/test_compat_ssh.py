"""Upstream's /ssh terminal flow (reference §4.3) against a local sandbox
(issue 12): what upstream's CLI (apps/cli/src/cmd/ssh/terminal.ts) does for
its daytona and deno sandboxes, and the SSE + HTTP variant of the same
gateway, with every refusal.

The CLI: POST /ssh/connect {cols, rows} with X-Sandbox-Id and the API
token as Bearer -> {sessionId}; a WebSocket to /ssh/<sessionId>/ws?token=
<API token> (User-Agent pocketenv-cli, no Origin); a resize as JSON on
open, keystrokes as text frames, output as text frames of base64; on the
way out a close (1000, "client disconnect") and DELETE
/ssh/disconnect/<sessionId>.

The daemon fixture is test_terminal.py's (one running busybox sandbox,
--terminal-idle 3).
"""
import base64
import json
import re
import time
import urllib.parse
import uuid

from conftest import wait_for
from test_terminal import IDLE, td  # noqa: F401 (fixture)
from wsclient import SSE, WS

UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def connect(td, ident=None, body=None, token="owner", headers=None):
    """POST /ssh/connect as the CLI sends it: (status, parsed answer)."""
    h = {"Content-Type": "application/json", "X-Sandbox-Id": ident or td.sid}
    h.update(headers or {})
    st, out = td.http("POST", "/ssh/connect",
                      json.dumps({"cols": 220, "rows": 50} if body is None else body).encode(),
                      token=token, headers=h)
    return st, json.loads(out) if out else None


def session(td, token="owner"):
    st, out = connect(td, token=token)
    assert st == 200, out
    return out["sessionId"]


def cli_ws(td, sid, token="owner", headers=None):
    """The CLI's WebSocket: the token in the URL, its User-Agent."""
    return td.ws(f"/ssh/{sid}/ws", token=token,
                 headers={"User-Agent": "pocketenv-cli", **(headers or {})})


def read_b64_until(ws, needle, timeout=15):
    """Decode text frames (base64 of the terminal's bytes) until needle."""
    deadline = time.monotonic() + timeout
    out = b""
    while needle not in out:
        op, p = ws.recv(max(0.01, deadline - time.monotonic()))
        assert op != 8, f"closed {ws.closed}; got {out[-300:]!r}"
        assert op == 1, "output comes in text frames"
        out += base64.b64decode(p, validate=True)
    return out


def sse_until(sse, needle, timeout=15):
    """(events seen, decoded output) until the output holds needle."""
    seen, out = [], b""
    for ev, data in sse.raw_events(timeout):
        seen.append(ev)
        if ev == "message":
            out += base64.b64decode(data, validate=True)
            if needle in out:
                return seen, out
    raise AssertionError(f"stream ended before {needle!r}: {seen} {out[-300:]!r}")


def test_cli_flow_over_a_websocket(td):
    st, out = connect(td)
    assert st == 200 and set(out) == {"sessionId"}, out
    sid = out["sessionId"]
    assert UUID4.fullmatch(sid), sid
    assert session(td) != sid  # every connect is a session of its own

    ws = cli_ws(td, sid)
    assert ws.status == 101, ws.head
    ws.send(json.dumps({"type": "resize", "cols": 100, "rows": 30}))  # on open
    ws.send("stty size; echo hi-$((6*7))\n")  # stdin chunks as text
    out = read_b64_until(ws, b"hi-42")
    assert b"30 100" in out, out
    # The bytes as they are (a /tty text frame would have U+FFFD here).
    ws.send("printf 'x\\377\\001y\\n'\n")
    assert b"x\xff\x01y" in read_b64_until(ws, b"x\xff\x01y")

    # teardown(): close 1000 "client disconnect", then DELETE disconnect.
    ws.send((1000).to_bytes(2, "big") + b"client disconnect", opcode=8)
    ws.close()
    st, body = td.http("DELETE", f"/ssh/disconnect/{sid}")
    assert (st, json.loads(body)) == (200, {"ok": True})
    again = cli_ws(td, sid)
    assert again.status == 404 and b"Session not found" in again.body
    st, body = td.http("DELETE", f"/ssh/disconnect/{sid}")
    assert st == 404


def test_shell_exit_closes_the_websocket(td):
    ws = cli_ws(td, session(td))
    assert ws.status == 101
    ws.send("exit\n")
    code, reason, _ = ws.wait_close(15)
    assert (code, reason) == (1000, "closed")


def test_sse_stream_with_input_and_resize(td):
    """The same gateway over SSE: output typed before anyone watches is
    replayed, events connected / data / close as upstream sends them."""
    sid = session(td)
    st, body = td.http("POST", f"/ssh/input/{sid}",
                       json.dumps({"data": "echo early-$((2+3))\n"}).encode(),
                       headers={"Content-Type": "application/json"})
    assert (st, json.loads(body)) == (200, {"ok": True})
    sse = td.sse(f"/ssh/stream/{sid}")
    assert sse.status == 200 and "text/event-stream" in sse.head
    events = sse.raw_events(15)
    assert next(events) == ("connected", sid)
    seen, out = sse_until(sse, b"early-5")
    st, body = td.http("POST", f"/ssh/resize/{sid}", json.dumps({"cols": 90, "rows": 20}).encode(),
                       headers={"Content-Type": "application/json"})
    assert (st, json.loads(body)) == (200, {"ok": True})
    td.http("POST", f"/ssh/input/{sid}", json.dumps({"data": "stty size\n"}).encode())
    assert b"20 90" in sse_until(sse, b"20 90")[1]
    td.http("POST", f"/ssh/input/{sid}", json.dumps({"data": "exit\n"}).encode())
    rest = list(sse.raw_events(15))
    assert rest[-1] == ("close", "closed") and sse.ended, rest
    st, body = td.http("POST", f"/ssh/input/{sid}", json.dumps({"data": "x"}).encode())
    assert st == 404 and json.loads(body)["message"] == "Session not found"
    # Bad bodies are refused, and type nothing.
    sid = session(td)
    for path, body in [(f"/ssh/input/{sid}", b'{"data": 5}'), (f"/ssh/input/{sid}", b"x"),
                       (f"/ssh/resize/{sid}", b'{"cols": 0, "rows": 5}'),
                       (f"/ssh/resize/{sid}", b'{"cols": "80"}')]:
        st, out = td.http("POST", path, body)
        assert st == 400 and json.loads(out)["error"] == "InvalidRequest", (path, out)
    assert td.http("DELETE", f"/ssh/disconnect/{sid}")[0] == 200
    sse.close()


def test_unwatched_session_ends(td):
    """A connect nobody streams ends as an abandoned terminal does."""
    sid = session(td)
    td.http("POST", f"/ssh/input/{sid}", json.dumps({"data": f"echo $$ > /tmp/{sid}\n"}).encode())

    def shell_pid():
        st, o = td.sandbox("exec", td.sid, {"command": f"cat /tmp/{sid} 2>/dev/null"})
        return o["stdout"].strip()
    pid = wait_for(shell_pid, 10, "the session's shell")
    assert pid in td.pids(td.sid)
    wait_for(lambda: pid not in td.pids(td.sid), IDLE + 10, "the unwatched shell to end")
    assert td.sse(f"/ssh/stream/{sid}").status == 404


def test_refusals(td):
    """No token, a bad or expired one, another user's token, a browser's
    API token in a URL: refused before any shell starts; another user
    cannot find, watch, type into or end a session whose id they hold."""
    base = td.shells(td.sid)
    sid = session(td)
    owner = json.loads(base64.urlsafe_b64decode(td.token.split(".")[1] + "=="))["did"]
    now = int(time.time())
    expired = td.jwt({"did": owner, "sub": owner, "scope": "api", "iat": now - 7200,
                      "exp": now - 3600})
    other = td.token_for("did:example:sshmallory")
    bad = [(None, 401, "AuthenticationRequired"), ("garbage", 401, "InvalidToken"),
           (expired, 401, "ExpiredToken")]
    for tok, want, name in bad + [(other, 404, "SandboxNotFound")]:
        st, out = connect(td, token=tok)
        assert (st, out["error"]) == (want, name), (tok, out)
    st, out = connect(td, ident="term", token=other)  # by name: theirs has none
    assert (st, out["error"]) == (404, "SandboxNotFound")
    for tok, want, name in bad + [(other, 404, "SessionNotFound")]:
        reqs = [td.http("POST", f"/ssh/input/{sid}", b'{"data":"touch /tmp/owned\\n"}', token=tok),
                td.http("POST", f"/ssh/resize/{sid}", b'{"cols":9,"rows":9}', token=tok),
                td.http("DELETE", f"/ssh/disconnect/{sid}", token=tok)]
        for st, body in reqs:
            assert st == want and name.encode() in body, (tok, st, body)
        w = cli_ws(td, sid, token=tok)
        assert w.status == want and name.encode() in w.body, (tok, w.head)
        sse = td.sse(f"/ssh/stream/{sid}", token=tok)
        assert sse.status == want
        sse.close()
    # The owner's session is untouched: it answers, and nothing was typed.
    ws = cli_ws(td, sid)
    assert ws.status == 101
    ws.send("test -e /tmp/owned && echo typed || echo clean-$((1+1))\n")
    assert b"clean-2" in read_b64_until(ws, b"clean-2")
    ws.close()

    # A token in a URL: an API token only on a WebSocket without Origin.
    term = td.call("io.pocketenv.actor.getTerminalToken")[1]["token"]
    s = SSE(td.port, f"/ssh/stream/{sid}?token={td.token}")
    assert s.status == 401 and b"terminal token" in s.raw
    s.close()
    s = SSE(td.port, f"/ssh/stream/{sid}?token={term}")
    assert s.status == 200
    s.close()
    page = {"Origin": f"http://127.0.0.1:{td.port}"}
    w = cli_ws(td, sid, headers=page)
    assert w.status == 401, w.head
    w = WS(td.port, f"/ssh/{sid}/ws?t={term}", headers=page)
    assert w.status == 101
    w.close()
    st, body = td.http("POST", "/ssh/connect", b"{}", token=None,
                       headers={"X-Sandbox-Id": td.sid, "Authorization": f"Bearer {term}"})
    assert st == 200  # a terminal token opens terminals, as on /tty
    assert td.http("DELETE", f"/ssh/disconnect/{json.loads(body)['sessionId']}")[0] == 200

    # Malformed requests.
    assert connect(td, headers={"X-Sandbox-Id": ""})[0] == 400
    assert connect(td, headers={"X-Sandbox-Id": "a/b"})[0] == 400
    st, out = td.http("POST", "/ssh/connect", b"[1]", headers={"X-Sandbox-Id": td.sid})
    assert st == 400
    assert connect(td, ident="sbx_missing")[0] == 404
    assert td.http("GET", "/ssh/connect")[0] == 405
    assert td.http("POST", f"/ssh/disconnect/{sid}", b"")[0] == 405
    assert td.http("GET", f"/ssh/{sid}/ws")[0] == 426
    for path in ["/ssh/stream/not-a-uuid", f"/ssh/stream/{sid.upper()}", "/ssh/nope"]:
        assert td.http("GET", path)[0] == 404, path
    assert td.http("GET", "/ssh/stream/" + "0" * 8 + "-0000-4000-8000-" + "0" * 12)[0] == 404
    assert td.http("DELETE", f"/ssh/disconnect/{sid}")[0] == 200
    # Nothing refused started a shell (two sessions were allowed, both ended).
    wait_for(lambda: td.shells(td.sid) <= base, 10, "the sessions' shells to end")


def test_stopped_sandbox_is_refused(td):
    st, o = td.call("io.pocketenv.sandbox.createSandbox", body={"base": "busybox",
                                                                "name": "ssh-stopped"})
    assert st == 200, o
    td.wait_status(o["id"], ["RUNNING"], timeout=30)
    st, out = connect(td, ident=o["id"])
    assert st == 200
    ws = cli_ws(td, out["sessionId"])
    assert ws.status == 101
    ws.send("echo up-$((1+1))\n")
    read_b64_until(ws, b"up-2")  # the shell runs
    assert td.sandbox("stopSandbox", o["id"])[0] == 200
    code, _, _ = ws.wait_close(15)  # the shell died with the sandbox
    assert code == 1000
    st, out = connect(td, ident=o["id"])
    assert (st, out["error"]) == (400, "SandboxNotRunning")
    assert td.sandbox("deleteSandbox", o["id"])[0] == 200


# ---- which URLs point upstream's CLI at the daemon ------------------------
#
# apps/cli/src/lib/env.ts: POCKETENV_API_URL (XRPC, /login, /ssh),
# POCKETENV_TTY_URL (sprites) and POCKETENV_PTY_URL (vercel, modal, e2b,
# hopx, runloop, blaxel): "<url>/<sandbox id>/ws?token=", POCKETENV_CF_URL
# (cloudflare): "sbx" replaced by the template name, then
# "/v1/sandboxes/<id>/ws/terminal?t=&session=". docs/compat.md.

def to_ws_url(http_url, path, token):
    """tty.ts and terminal.ts's toWsUrl."""
    base = re.sub(r"^http(s?)", lambda m: "ws" + m.group(1), http_url)
    return base + path + "?" + urllib.parse.urlencode({"token": token})


def resolve_worker_url(base_sandbox, cf_url):
    """cloudflare.ts: String.replace with a string replaces the first match."""
    return cf_url.replace("sbx", base_sandbox, 1).replace("claude-code", "claudecode", 1)


def ws_to(td, url, **kw):
    """A WebSocket to url, which must name the daemon's host and port."""
    u = urllib.parse.urlsplit(url)
    assert (u.scheme, u.hostname, u.port) == ("ws", "127.0.0.1", td.port), url
    return WS(td.port, u.path + ("?" + u.query if u.query else ""), **kw)


def test_one_daemon_url_for_every_pocketenv_url(td):
    daemon_url = td.url  # http://127.0.0.1:PORT, no "sbx" in it
    sb = td.sandbox("getSandbox", td.sid)[1]["sandbox"]
    # POCKETENV_TTY_URL / POCKETENV_PTY_URL: the daemon's URL itself, or
    # with /tty, /pty as upstream's defaults have them.
    for tty_url in (daemon_url, daemon_url + "/tty", daemon_url + "/pty"):
        ws = ws_to(td, to_ws_url(tty_url, f"/{sb['id']}/ws", td.token),
                   headers={"User-Agent": "pocketenv-cli"})
        assert ws.status == 101, (tty_url, ws.head)
        ws.send(json.dumps({"type": "resize", "cols": 80, "rows": 24}))
        ws.send("echo tty-$((40+2))\n")
        ws.read_until("tty-42")
        ws.close()
    # POCKETENV_CF_URL: the daemon's URL; with no "sbx" in it, the CLI's
    # rewrite leaves it alone, whatever the template.
    term = td.call("io.pocketenv.actor.getTerminalToken")[1]["token"]
    worker = resolve_worker_url(sb["baseSandbox"], daemon_url)
    assert worker == daemon_url
    ws_base = re.sub(r"^http", "ws", worker, count=1)
    url = f"{ws_base}/v1/sandboxes/{sb['id']}/ws/terminal?" + urllib.parse.urlencode(
        {"t": term, "session": str(uuid.uuid4())})
    ws = ws_to(td, url, headers={"User-Agent": "pocketenv-cli"})
    assert ws.status == 101, ws.head
    op, p = ws.recv(15)
    assert (op, json.loads(p)) == (1, {"type": "ready"})
    ws.send(json.dumps({"type": "resize", "cols": 80, "rows": 24}))
    ws.send(b"echo cf-$((1+1))\n")
    ws.read_until(b"cf-2")
    ws.close()
    # POCKETENV_API_URL: XRPC and /ssh (test_cli_flow_over_a_websocket).
    assert connect(td)[0] == 200
    # A CF URL with "sbx" in it is rewritten to another host: the operator
    # must give one without (docs/compat.md).
    assert resolve_worker_url("openclaw", "https://sbx.example.com") == \
        "https://openclaw.example.com"
    # Only ids at the root: nothing else there is a terminal.
    assert td.ws("/term/ws").status != 101
