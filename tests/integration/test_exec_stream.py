"""The streaming exec (our extension, issue 14): /exec/:id/ws carries a
command's stdin, stdout and stderr as bytes as they come, a PTY on request,
signals and the exit code. Real daemon, raw WebSocket client."""
import json
import os

import pytest

from conftest import wait_for
from test_daemon import serving
from wsclient import WS


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    with serving(tmp_path_factory.mktemp("xs")) as d:
        st, sb = d.call("io.pocketenv.sandbox.createSandbox",
                        body={"base": "busybox", "name": "xs"})
        assert st == 200, sb
        d.sid = d.wait_status("xs", ["RUNNING"])["id"]
        d.port = int(d.url.rsplit(":", 1)[1])
        yield d


def open_exec(d, spec, token=None, ident=None, headers=None):
    h = {"Authorization": f"Bearer {token or d.token}"} if token is not False else {}
    ws = WS(d.port, f"/exec/{ident or d.sid}/ws", headers={**h, **(headers or {})})
    if ws.status == 101 and spec is not None:
        ws.send(json.dumps(spec))
    return ws


def collect(ws, stdin=None, timeout=30):
    """Run to the end, sending stdin within the window the server grants:
    (stdout bytes, stderr bytes, exit code, close code)."""
    out, err, code, window = b"", b"", None, 0
    left = stdin
    while True:
        op, p = ws.recv(timeout)
        if op == 2:
            if p[0] == 1:
                out += p[1:]
            else:
                err += p[1:]
        elif op == 1:
            m = json.loads(p)
            if m["type"] == "window":
                window += m["bytes"]
            elif m["type"] == "exit":
                code = m["code"]
            while left is not None and window > 0 and left:
                chunk, left = left[:min(window, 65536)], left[min(window, 65536):]
                ws.send(chunk)
                window -= len(chunk)
            if left == b"":
                ws.send(json.dumps({"type": "eof"}))
                left = None
        elif op == 8:
            return out, err, code, ws.closed[0]


def test_stdin_stdout_stderr_exit_code(daemon):
    ws = open_exec(daemon, {"argv": ["sh", "-c", "cat; echo oops >&2; exit 7"]})
    assert ws.status == 101, ws.head
    out, err, code, close = collect(ws, stdin=b"hello\n")
    assert (out, err, code, close) == (b"hello\n", b"oops\n", 7, 1000)


def test_any_bytes_and_no_size_cap(daemon):
    every = bytes(range(256))
    ws = open_exec(daemon, {"command": "cat"})
    out, _, code, _ = collect(ws, stdin=every * 4)
    assert out == every * 4 and code == 0
    # 8 MiB out (the one-shot exec cut output at 1 MiB), and 3 MiB in: more
    # than the window, so the client waits for grants as it should.
    ws = open_exec(daemon, {"command": "head -c 8388608 /dev/zero; wc -c"})
    big = os.urandom(3 << 20)
    out, _, code, _ = collect(ws, stdin=big)
    assert code == 0 and out[:8 << 20] == b"\0" * (8 << 20)
    assert out[8 << 20:].strip() == str(len(big)).encode()


def test_a_pty_with_its_size(daemon):
    ws = open_exec(daemon, {"command": "tty >/dev/null && echo is-a-tty; stty size",
                            "tty": True, "cols": 100, "rows": 30})
    out, _, code, _ = collect(ws)
    assert b"is-a-tty" in out and b"30 100" in out and code == 0


def test_signals_reach_the_command(daemon):
    ws = open_exec(daemon, {"command": "trap 'echo got-int; exit 3' INT; echo ready; "
                                       "while :; do sleep 0.1; done"})
    ws.read_until(b"ready")
    ws.send(json.dumps({"type": "signal", "signal": "INT"}))
    out, _, code, _ = collect(ws)
    assert b"got-int" in out and code == 3


def test_leaving_ends_the_command(daemon):
    marker = "xs" + os.urandom(4).hex()
    ws = open_exec(daemon, {"command": f"echo up; sleep 300; : {marker}"})
    ws.read_until(b"up")
    ws.close()
    wait_for(lambda: marker not in daemon.sandbox(
        "exec", daemon.sid, {"command": "ps -o args"})[1]["stdout"], 10, "the command to end")


def test_refusals(daemon):
    assert open_exec(daemon, None, token=False).status == 401
    other = daemon.token_for("did:key:z6MkOtherStreamUser")
    assert open_exec(daemon, None, token=other).status == 404
    assert open_exec(daemon, None, ident="nope").status == 404
    # A page cannot use an API token in the URL (no Origin: upstream's CLI only).
    ws = WS(daemon.port, f"/exec/{daemon.sid}/ws?token={daemon.token}",
            headers={"Origin": "http://evil.example"})
    assert ws.status == 401
    for bad in ("not json", json.dumps({"argv": []}), json.dumps({"argv": ["a"], "command": "b"}),
                json.dumps({"command": "true", "env": {"A B": "x"}})):
        ws = open_exec(daemon, None)
        ws.send(bad)
        code, reason, frames = ws.wait_close()
        assert code == 1008, (bad, code, reason)
    ws = open_exec(daemon, {"argv": ["no-such-command-here"]})
    out, err, code, close = collect(ws)
    assert code == 127 or close == 1011, (out, err, code, close)
    assert daemon.healthy()
