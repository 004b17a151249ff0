"""The daemon's MCP server (issue 17), driven by the official MCP SDK
(@modelcontextprotocol/sdk, pinned) over streamable HTTP (/mcp) and over
stdio (`pocketenv mcp`, launched from an agent's JSON configuration):
tools/list, every tool, errors a model can act on, another user's
sandbox, version negotiation, a stream resumed on a new connection.
tests/mcp/drive.mjs is the client; raw HTTP checks the transport's edges
(authz, malformed JSON-RPC, batches, sizes)."""
import base64
import datetime
import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import time
import urllib.error
import urllib.request

import pytest

from conftest import BIN
from test_daemon import serving

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DRIVE = os.path.join(ROOT, "tests", "mcp", "drive.mjs")
NODE = shutil.which("node")
SDK = os.path.join(ROOT, "node_modules", "@modelcontextprotocol", "sdk", "package.json")

pytestmark = pytest.mark.skipif(NODE is None or not os.path.exists(SDK),
                                reason="node and @modelcontextprotocol/sdk (npm ci) needed")

TOOLS = {"sandbox_templates", "sandbox_create", "sandbox_list", "sandbox_get", "sandbox_start",
         "sandbox_stop", "sandbox_delete", "exec", "read_output", "service_start",
         "service_logs", "service_stop", "file_read", "file_write", "file_list", "file_remove",
         "env_set", "port_expose", "backup_create", "backup_list", "backup_restore",
         "dir_download", "dir_upload",
         "snapshot_create", "snapshot_list", "snapshot_get", "snapshot_delete", "snapshot_restore",
         "sandbox_fork",
         "idle_policy_get", "idle_policy_set"}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    with serving(tmp_path_factory.mktemp("mcp")) as d:
        d.others = []
        d.mcp = d.url + "/mcp"
        yield d


def drive(d, scenario, token=None, timeout=240, **env):
    p = subprocess.run([NODE, DRIVE, scenario], capture_output=True, text=True, timeout=timeout,
                       cwd=ROOT, env=dict(os.environ, MCP_URL=d.mcp, MCP_TOKEN=token or d.token,
                                          **env))
    assert p.returncode == 0, p.stderr[-4000:] + d.log_text()[-3000:]
    return json.loads(p.stdout)


def agent_config(d, tmp_path, token=None):
    """Claude Code's .mcp.json (Gemini CLI's settings.json has the same
    mcpServers shape), as docs/mcp.md tells users to write it."""
    conf = {"mcpServers": {"pocketenv": {
        "command": BIN, "args": ["mcp"],
        "env": {"POCKETENV_API_URL": d.url, "POCKETENV_TOKEN": token or d.token}}}}
    path = tmp_path / ".mcp.json"
    path.write_text(json.dumps(conf, indent=2))
    return str(path)


def rpc(d, body, token="owner", session=None, headers=None, method="POST", raw=None):
    """One HTTP request to /mcp: (status, headers, parsed body or text)."""
    h = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    tok = d.token if token == "owner" else token
    if tok:
        h["Authorization"] = f"Bearer {tok}"
    if session:
        h["Mcp-Session-Id"] = session
    h.update(headers or {})
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(d.mcp, data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            status, hdrs, text = r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        status, hdrs, text = e.code, dict(e.headers), e.read().decode()
    try:
        return status, hdrs, json.loads(text) if text else None
    except ValueError:
        return status, hdrs, text


def initialize(d, token="owner", version="2025-06-18"):
    st, h, out = rpc(d, {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                         "params": {"protocolVersion": version, "capabilities": {},
                                    "clientInfo": {"name": "t", "version": "1"}}}, token=token)
    assert st == 200, out
    return h["Mcp-Session-Id"], out


def check_tools_run(out, name):
    assert {t["name"] for t in out["tools"]} == TOOLS
    for t in out["tools"]:
        assert t["schema"]["type"] == "object" and len(t["description"]) > 20, t
    assert "busybox" in out["templates"]["text"]
    assert not out["create"]["isError"], out["create"]
    assert out["create"]["structured"]["status"] == "RUNNING"
    assert name in out["list"]["text"] and not out["list"]["isError"]
    assert '"status": "RUNNING"' in out["get"]["text"]

    assert out["exec"] == {"isError": False, "structured": out["exec"]["structured"],
                           "text": out["exec"]["text"]}
    assert "out\n" in out["exec"]["text"] and "err\n" in out["exec"]["text"]
    assert out["exec"]["structured"]["exitCode"] == 0
    # a failing command is a tool error with its exit code and stderr
    assert out["execFails"]["isError"] and "exit code: 7" in out["execFails"]["text"]
    assert "no\n" in out["execFails"]["text"]
    assert out["execTimeout"]["isError"] and out["execTimeout"]["structured"]["timedOut"]

    # long output: paged, every byte reachable, nothing cut silently
    want = "".join(f"{i}\n" for i in range(1, 20001))

    def page(text):
        body = text.split("---\n", 1)[1].split("[stdout continues")[0]
        return body.replace("\n[the page ends mid-line: the next page goes on with the line]\n",
                            "").split("--- stderr")[0]

    first = page(out["firstPage"])
    rest = "".join(page(p["text"]) for p in out["pages"])
    assert len(out["pages"]) >= 2
    assert "read_output" in out["firstPage"]
    assert out["execLong"]["structured"]["stdoutBytes"] == len(want)
    assert first + rest == want
    assert out["readOutputGone"]["isError"] and "Run the command again" in \
        out["readOutputGone"]["text"]

    assert not out["write"]["isError"] and not out["append"]["isError"], out["write"]
    assert out["read"]["text"] == out["expectedFile"]
    exp = out["expectedFile"].encode()
    assert out["readPart"]["text"].startswith(exp[5:8].decode())
    assert "Call file_read with offset 8" in out["readPart"]["text"]
    assert "b.txt" in out["listDir"]["text"]
    assert out["rmDir"]["isError"] and "recursive" in out["rmDir"]["text"]
    assert not out["rmDirRec"]["isError"]
    assert out["readGone"]["isError"] and "no regular file" in out["readGone"]["text"]

    assert not out["setVar"]["isError"] and not out["setSecret"]["isError"]
    assert "s3cr3t-value" not in out["setSecret"]["text"]
    assert out["envSeen"]["text"].count("hello s3cr3t-value") == 1

    assert not out["svcStart"]["isError"], out["svcStart"]
    assert "tick 3" in out["svcLogs"]["text"]
    assert not out["svcStop"]["isError"]
    assert out["svcGone"]["isError"] and "service_start" in out["svcGone"]["text"]
    assert "localhost" in out["port"]["structured"]["previewUrl"]
    assert not out["backup"]["isError"], out["backup"]
    assert out["backup"]["structured"]["backup"]["id"] in out["backups"]["text"]
    assert not out["restore"]["isError"], out["restore"]
    assert out["restored"]["text"] == "v1\n"
    assert out["restoreUnknown"]["isError"] and "HTTP 404" in out["restoreUnknown"]["text"]

    assert out["unknown"]["isError"] and "sandbox_list" in out["unknown"]["text"]
    for k in ("badArgs", "badType", "extraArg"):
        assert out[k]["isError"] and "bad arguments" in out[k]["text"], out[k]
    assert "command" in out["badArgs"]["text"] and "color" in out["extraArg"]["text"]
    assert out["unknownTool"]["code"] == -32602, out["unknownTool"]

    assert not out["stop"]["isError"]
    assert out["execStopped"]["isError"] and "sandbox_start" in out["execStopped"]["text"]
    assert not out["start"]["isError"] and not out["delete"]["isError"]


def test_tools_over_streamable_http(daemon):
    out = drive(daemon, "tools", MCP_SANDBOX="mcp-http", MCP_TRANSPORT="http")
    check_tools_run(out, "mcp-http")
    # sandbox_create waited and said so while it did
    for p in out["createProgress"]:
        assert "sandbox" in p["message"], p
    progress = [p["progress"] for p in out["createProgress"]]
    assert progress == sorted(set(progress))


def test_tools_over_stdio_from_an_agent_config(daemon, tmp_path):
    out = drive(daemon, "tools", MCP_SANDBOX="mcp-stdio", MCP_TRANSPORT="stdio",
                MCP_CONFIG=agent_config(daemon, tmp_path))
    check_tools_run(out, "mcp-stdio")


def test_config_lists_tools(daemon, tmp_path):
    out = drive(daemon, "config", MCP_CONFIG=agent_config(daemon, tmp_path))
    assert set(out["tools"]) == TOOLS and out["ping"] == {}


def test_another_users_sandbox_is_not_there(daemon):
    st, mine = daemon.call("io.pocketenv.sandbox.createSandbox",
                           body={"base": "busybox", "name": "mcp-private"})
    assert st == 200
    daemon.wait_status("mcp-private", ["RUNNING"])
    other = daemon.token_for("did:key:zMcpSomeoneElse")
    daemon.others.append(other)
    for ident in ("mcp-private", mine["id"]):
        out = drive(daemon, "other", token=other, MCP_SANDBOX=ident,
                    MCP_ARCHIVE=base64.b64encode(targz({"x": b"x"})).decode())
        for name in ("sandbox_get", "exec", "file_read", "file_write", "env_set",
                     "service_start", "port_expose", "dir_download", "dir_upload",
                     "sandbox_stop", "sandbox_delete"):
            assert out[name]["isError"], (name, out[name])
            assert "HTTP 404" in out[name]["text"] and "sandbox_list" in out[name]["text"]
        assert "mcp-private" not in out["list"]["text"]
    # and it is untouched
    assert daemon.wait_status("mcp-private", ["RUNNING"])["id"] == mine["id"]
    st, o = daemon.call("io.pocketenv.sandbox.exec", {"id": "mcp-private"},
                        {"command": "ls /tmp/x 2>&1; echo $A"})
    assert "No such file" in o["stdout"] and o["stdout"].strip().endswith("No such file or directory")


def targz(files):
    """A tar.gz of {path: bytes}, as an agent would pack a directory."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize("transport", ["http", "stdio"])
def test_directories_up_and_down_as_archives(daemon, tmp_path, transport):
    name = f"mcp-arch-{transport}"
    st, _ = daemon.call("io.pocketenv.sandbox.createSandbox",
                        body={"base": "busybox", "name": name})
    assert st == 200
    daemon.wait_status(name, ["RUNNING"])
    up = targz({"a.txt": b"alpha\n", "sub/b.txt": b"beta\n"})
    evil = targz({"../escaped": b"out\n"})
    out = drive(daemon, "archives", MCP_SANDBOX=name, MCP_TRANSPORT=transport,
                MCP_CONFIG=agent_config(daemon, tmp_path),
                MCP_ARCHIVE=base64.b64encode(up).decode(),
                MCP_EVIL=base64.b64encode(evil).decode())
    assert not out["upload"]["isError"], out["upload"]
    assert "---\nalpha\nbeta\n---" in out["inside"]["text"], out["inside"]
    d = out["download"]
    assert not d["isError"] and len(d["resources"]) == 1, d
    res = d["resources"][0]
    assert res["mimeType"] == "application/gzip" and res["uri"].endswith("/archive/srv/up")
    with tarfile.open(fileobj=io.BytesIO(base64.b64decode(res["blob"])), mode="r:gz") as t:
        got = {m.name.lstrip("./"): t.extractfile(m).read() for m in t.getmembers() if m.isfile()}
    assert got == {"a.txt": b"alpha\n", "sub/b.txt": b"beta\n", "sub/c.txt": b"made inside\n"}
    assert out["notBase64"]["isError"] and "base64" in out["notBase64"]["text"]
    assert out["evil"]["isError"] and ".." in out["evil"]["text"], out["evil"]
    assert "No such file" in out["evilLanded"]["text"], out["evilLanded"]
    assert out["missingDir"]["isError"], out["missingDir"]
    assert out["unknownSandbox"]["isError"] and "sandbox_list" in out["unknownSandbox"]["text"]
    assert daemon.sandbox("deleteSandbox", name)[0] == 200


def new_sandbox(daemon, name):
    st, _ = daemon.call("io.pocketenv.sandbox.createSandbox",
                        body={"base": "busybox", "name": name})
    assert st == 200
    daemon.wait_status(name, ["RUNNING"])


@pytest.mark.parametrize("transport", ["http", "stdio"])
def test_resource_subscriptions(daemon, tmp_path, transport):
    name = f"mcp-sub-{transport}"
    new_sandbox(daemon, name)
    out = drive(daemon, "subscribe", MCP_SANDBOX=name, MCP_TRANSPORT=transport,
                MCP_CONFIG=agent_config(daemon, tmp_path))
    assert out["caps"]["resources"]["subscribe"] is True
    assert out["fileUpdated"] and out["otherUpdated"] and out["logsUpdated"], out
    assert out["otherAgain"], out
    file = f"pocketenv://sandbox/{name}/file/srv/watched.txt"
    logs = f"pocketenv://sandbox/{name}/service/ticker/logs"
    assert file not in out["afterUnsubscribe"] and logs not in out["afterUnsubscribe"], out
    for e in out["errors"]:
        assert e.get("code") == -32002, e
    assert daemon.sandbox("deleteSandbox", name)[0] == 200


@pytest.mark.parametrize("transport", ["http", "stdio"])
def test_a_cancelled_command_stops(daemon, tmp_path, transport):
    name = f"mcp-cancel-{transport}"
    new_sandbox(daemon, name)
    out = drive(daemon, "cancel", MCP_SANDBOX=name, MCP_TRANSPORT=transport,
                MCP_CONFIG=agent_config(daemon, tmp_path))
    assert out["pid"].isdigit(), out
    assert out["rejected"], out
    assert out["gone"], out
    assert out["ping"] == {} and "still here" in out["after"]["text"]
    st, o = daemon.call("io.pocketenv.sandbox.exec", {"id": name},
                        {"command": "cat /tmp/late 2>&1"})
    assert "No such file" in o["stdout"], o
    assert daemon.sandbox("deleteSandbox", name)[0] == 200


@pytest.mark.parametrize("transport", ["http", "stdio"])
def test_files_and_service_logs_as_resources(daemon, tmp_path, transport):
    name = f"mcp-res-{transport}"
    st, _ = daemon.call("io.pocketenv.sandbox.createSandbox",
                        body={"base": "busybox", "name": name})
    assert st == 200
    daemon.wait_status(name, ["RUNNING"])
    out = drive(daemon, "resources", MCP_SANDBOX=name, MCP_TRANSPORT=transport,
                MCP_CONFIG=agent_config(daemon, tmp_path))
    assert out["caps"]["resources"] == {"subscribe": True, "listChanged": False}
    assert {t["name"] for t in out["templates"]} == {"sandbox-file", "service-logs"}
    assert out["list"] == []
    f = out["file"]["contents"][0]
    assert f["text"] == "a note\n" and f["uri"].endswith("/file/srv/notes.txt")
    assert "hello from a service" in out["logs"]["contents"][0]["text"]
    for e in out["errors"]:
        assert e.get("code") == -32002, e
    assert "no regular file" in out["errors"][0]["message"]
    assert "no service named" in out["errors"][1]["message"]
    assert "sandbox_list" in out["errors"][2]["message"]
    assert daemon.sandbox("deleteSandbox", name)[0] == 200


def test_version_negotiation(daemon):
    out = drive(daemon, "version")
    assert out["negotiated"] == "2025-11-25"
    assert out["server"]["name"] == "pocketenv" and "tools" in out["capabilities"]
    # a version we speak is kept; one we do not is answered with ours
    for asked, got in (("2025-03-26", "2025-03-26"), ("2024-11-05", "2024-11-05"),
                       ("2030-01-01", "2025-11-25"), ("nonsense", "2025-11-25")):
        sid, o = initialize(daemon, version=asked)
        assert o["result"]["protocolVersion"] == got
    # later requests name the version; an unknown one is refused
    sid, _ = initialize(daemon)
    st, _, o = rpc(daemon, {"jsonrpc": "2.0", "id": 2, "method": "ping"}, session=sid,
                   headers={"MCP-Protocol-Version": "1999-01-01"})
    assert st == 400 and o["error"]["code"] == -32000
    st, _, o = rpc(daemon, {"jsonrpc": "2.0", "id": 2, "method": "ping"}, session=sid,
                   headers={"MCP-Protocol-Version": "2025-06-18"})
    assert (st, o["result"]) == (200, {})


def test_stream_resumes_on_a_new_connection(daemon):
    st, _ = daemon.call("io.pocketenv.sandbox.createSandbox",
                        body={"base": "busybox", "name": "mcp-resume"})
    assert st == 200
    daemon.wait_status("mcp-resume", ["RUNNING"])
    out = drive(daemon, "resume", MCP_SANDBOX="mcp-resume")
    assert out["token"].endswith("-0"), out
    assert "finished" in out["resumed"] and not out["isError"], out
    assert "--- stdout (bytes 0-2 of 2) ---\n1\n" in out["runs"], out  # ran once, not twice
    # the session is over once the client ends it
    assert "initialize" in out["afterEnd"], out
    assert daemon.sandbox("deleteSandbox", "mcp-resume")[0] == 200


# ---- the transport's edges, over raw HTTP ---------------------------------


def test_mcp_authz_matrix(daemon):
    owner = daemon.call("io.pocketenv.actor.getProfile")[1]["did"]
    now = int(time.time())
    expired = daemon.jwt({"did": owner, "sub": owner, "scope": "api", "iat": now - 7200,
                          "exp": now - 3600})
    forged = daemon.jwt({"did": owner, "sub": owner, "scope": "api", "iat": now,
                         "exp": now + 600}, key=os.urandom(32))
    terminal = daemon.call("io.pocketenv.actor.getTerminalToken")[1]["token"]
    sid, _ = initialize(daemon)
    ping = {"jsonrpc": "2.0", "id": 5, "method": "ping"}
    for tok in (None, expired, forged, "not-a-jwt", terminal):
        for method, body in (("POST", ping), ("GET", None), ("DELETE", None)):
            st, h, o = rpc(daemon, body, token=tok, session=sid, method=method)
            assert st == 401, (tok, method, o)
            assert h.get("WWW-Authenticate", "").startswith("Bearer"), h
            assert o["error"]["code"] == -32001
        st, _, o = rpc(daemon, {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                                "params": {"protocolVersion": "2025-06-18"}}, token=tok)
        assert st == 401
    # another user: the session is unknown to them (and survives the try)
    other = daemon.token_for("did:key:zMcpOther2")
    for method, body, last in (("POST", ping, None), ("DELETE", None, None),
                               ("GET", None, "1-0"), ("GET", None, None)):
        st, _, o = rpc(daemon, body, token=other, session=sid, method=method,
                       headers={"Last-Event-ID": last, "Accept": "text/event-stream"}
                       if last else {"Accept": "text/event-stream"} if method == "GET" else None)
        assert st == 404, (method, last, o)
    st, _, o = rpc(daemon, ping, session=sid)
    assert (st, o["result"]) == (200, {})
    # a revoked... ended session is gone for its owner too
    st, _, _ = rpc(daemon, None, session=sid, method="DELETE")
    assert st == 204
    st, _, o = rpc(daemon, ping, session=sid)
    assert st == 404 and "initialize" in o["error"]["message"]


@pytest.mark.parametrize("raw,status,code", [
    (b"{not json", 400, -32700),
    (b"[]", 400, -32600),
    (json.dumps([{"jsonrpc": "2.0", "id": i, "method": "ping"} for i in range(1000)]).encode(),
     400, -32600),
    (b'{"jsonrpc": "1.0", "id": 1, "method": "ping"}', 400, -32600),
    (b'{"jsonrpc": "2.0", "id": {"x": 1}, "method": "ping"}', 400, -32600),
    (b'{"jsonrpc": "2.0", "id": 1, "method": 7}', 400, -32600),
    (b'{"jsonrpc": "2.0"}', 400, -32600),
    (b'{"jsonrpc": "2.0", "id": 1, "id": 2, "method": "ping"}', 400, -32700),
    (b'"just a string"', 400, -32600),
])
def test_malformed_json_rpc(daemon, raw, status, code):
    sid, _ = initialize(daemon)
    st, _, o = rpc(daemon, None, session=sid, raw=raw)
    assert (st, o["error"]["code"]) == (status, code), o
    # the session is still fine
    st, _, o = rpc(daemon, {"jsonrpc": "2.0", "id": 9, "method": "ping"}, session=sid)
    assert (st, o["result"]) == (200, {})


def test_unknown_methods_and_missing_sessions(daemon):
    sid, _ = initialize(daemon)
    st, _, o = rpc(daemon, {"jsonrpc": "2.0", "id": 3, "method": "no/such"}, session=sid)
    assert st == 200 and o["error"]["code"] == -32601 and o["id"] == 3
    st, _, o = rpc(daemon, {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                            "params": {"name": "exec", "arguments": [1]}}, session=sid)
    assert o["error"]["code"] == -32602
    st, _, o = rpc(daemon, {"jsonrpc": "2.0", "id": 3, "method": "tools/list"})
    assert st == 400 and "initialize" in o["error"]["message"]
    st, _, o = rpc(daemon, {"jsonrpc": "2.0", "id": 3, "method": "tools/list"},
                   session="0" * 32)
    assert st == 404
    st, _, o = rpc(daemon, {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                            "params": {"protocolVersion": "2025-06-18"}}, session=sid)
    assert st == 400
    # notifications are taken without an answer
    st, _, o = rpc(daemon, {"jsonrpc": "2.0", "method": "notifications/initialized"},
                   session=sid)
    assert (st, o) == (202, None)
    st, _, _ = rpc(daemon, None, session=sid, method="PUT")
    assert st == 405
    st, _, o = rpc(daemon, None, session=sid, method="GET",
                   headers={"Accept": "text/event-stream", "Last-Event-ID": "77-3"})
    assert st == 404
    st, _, o = rpc(daemon, {"jsonrpc": "2.0", "id": 3, "method": "ping"}, session=sid,
                   headers={"Content-Type": "text/plain"})
    assert st == 415


def test_huge_payloads_refused(daemon):
    sid, _ = initialize(daemon)
    # declared too big: refused before a byte of it is read
    port = int(daemon.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall((f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
                   f"{daemon.token}\r\nMcp-Session-Id: {sid}\r\nContent-Type: application/json"
                   f"\r\nContent-Length: {3 << 20}\r\n\r\n").encode())
        s.sendall(b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"x": "')
        head = s.recv(4096)
    assert head.startswith(b"HTTP/1.1 413"), head
    # within the message limit, an argument over the tools' own bound
    mid = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
           "params": {"name": "file_write", "arguments": {"sandbox": "x", "path": "/a",
                                                          "content": "y" * 300000}}}
    st, _, o = rpc(daemon, mid, session=sid, headers={"Accept": "application/json"})
    assert st == 200 and o["result"]["isError"] and "at most" in o["result"]["content"][0]["text"]
    st, _, o = rpc(daemon, {"jsonrpc": "2.0", "id": 9, "method": "ping"}, session=sid)
    assert (st, o["result"]) == (200, {})


def test_sessions_per_user_are_bounded(daemon):
    tok = daemon.token_for("did:key:zMcpMany")
    sids = []
    for i in range(40):
        st, h, o = rpc(daemon, {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                                "params": {"protocolVersion": "2025-06-18"}}, token=tok)
        if st != 200:
            break
        sids.append(h["Mcp-Session-Id"])
    assert st == 429 and len(sids) == 32, (st, o)
    # ending one makes room
    assert rpc(daemon, None, token=tok, session=sids[0], method="DELETE")[0] == 204
    st, _, _ = rpc(daemon, {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                            "params": {"protocolVersion": "2025-06-18"}}, token=tok)
    assert st == 200
    # the owner is not affected by another user's sessions
    initialize(daemon)


def test_stdio_relay_without_login_or_daemon(tmp_path):
    """`pocketenv mcp` says what is wrong: on stderr when there is no
    token (stdout stays the protocol's), as a JSON-RPC error per request
    when the daemon does not answer."""
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    p = subprocess.run([BIN, "mcp"], input="", capture_output=True, text=True, timeout=30,
                       env=env)
    assert p.returncode != 0 and p.stdout == "" and "login" in p.stderr, p
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    init = {"jsonrpc": "2.0", "id": 7, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18"}}
    p = subprocess.run([BIN, "mcp"], input=json.dumps(init) + "\nnot json\n",
                       capture_output=True, text=True, timeout=30,
                       env=dict(env, POCKETENV_API_URL=f"http://127.0.0.1:{port}",
                                POCKETENV_TOKEN="x"))
    lines = [json.loads(line) for line in p.stdout.splitlines()]
    assert p.returncode == 0, p
    assert lines[0]["id"] == 7 and "cannot reach" in lines[0]["error"]["message"], lines
    assert lines[1]["error"]["code"] == -32700 and lines[1]["id"] is None


def test_other_origins_refused(daemon):
    """DNS rebinding: a page of another site cannot drive /mcp from a
    browser, even one that has the token."""
    ping = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18"}}
    host = daemon.url[len("http://"):]
    for origin in ("http://evil.example", "null", f"http://{host}.evil.example",
                   "http://127.0.0.1"):
        st, _, o = rpc(daemon, ping, headers={"Origin": origin})
        assert st == 403, (origin, o)
    st, _, o = rpc(daemon, ping, headers={"Origin": f"http://{host}"})
    assert st == 200, o


def test_snapshot_tools(daemon):
    """snapshot_create, snapshot_list and sandbox_fork call our snapshot
    methods for the session's user (issue 19)."""
    d = daemon
    st, sb = d.call("io.pocketenv.sandbox.createSandbox", body={"base": "busybox", "name": "mcpsnap"})
    assert st == 200, sb
    assert d.wait_status(sb["id"], ["RUNNING", "FAILED"])["status"] == "RUNNING"
    sid, _ = initialize(d)

    def call(name, args):
        st, _, o = rpc(d, {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                           "params": {"name": name, "arguments": args}}, session=sid,
                       headers={"Accept": "application/json"})
        assert st == 200 and not o["result"].get("isError"), o
        return o["result"]["content"][0]["text"]

    assert "snp_" in call("snapshot_create", {"sandbox": "mcpsnap", "name": "by-mcp"})
    assert "by-mcp" in call("snapshot_list", {})
    text = call("sandbox_fork", {"sandbox": "mcpsnap", "count": 2})
    st, out = d.call("io.pocketenv.sandbox.getSnapshots")
    for s in out["snapshots"]:
        assert d.call("io.pocketenv.sandbox.deleteSnapshot", {"id": s["id"]}, post=True,
                      timeout=120)[0] == 200
    st, out = d.call("io.pocketenv.actor.getActorSandboxes", {"did": "owner.local", "limit": 100})
    forks = [x for x in out["sandboxes"] if x["name"].startswith("mcpsnap-")]
    assert len(forks) == 2 and all(x["id"] in text for x in forks), text
    for x in forks + [sb]:
        d.wait_status(x["id"], ["RUNNING", "FAILED"], timeout=120)
        assert d.sandbox("deleteSandbox", x["id"])[0] == 200


def iso(t):
    return datetime.datetime.fromisoformat(t.replace("Z", "+00:00"))


def test_snapshot_and_idle_tools_through_the_sdk(daemon):
    """snapshot_create (with a TTL), snapshot_get, a sandbox made from the
    snapshot with sandbox_create, snapshot_delete, idle_policy_get/set,
    driven by the MCP SDK; bad arguments are tool errors a model can act
    on, and nothing changes."""
    out = drive(daemon, "snapshots", MCP_SANDBOX="mcp-snapsdk")
    assert not out["create"]["isError"], out["create"]
    assert not out["snapCreate"]["isError"], out["snapCreate"]
    made = out["snapCreate"]["structured"]["snapshot"]
    assert made["name"] == "mcp-snapsdk-snap" and made["id"].startswith("snp_")
    got = out["snapGet"]["structured"]["snapshot"]
    assert got["id"] == made["id"] and got["frozenMs"] >= 0 and got["sizeBytes"] >= 0
    # ttl 600 s: it expires in ten minutes, not the default 7 days
    left = iso(got["expiresAt"]) - iso(got["createdAt"])
    assert 590 <= left.total_seconds() <= 610, got
    assert out["snapBadTtl"]["isError"] and "ttl" in out["snapBadTtl"]["text"]
    # a local snapshot makes new sandboxes; it is never put back in place
    assert out["snapRestore"]["isError"], out["snapRestore"]
    assert "not supported by local: snapshot-restore" in out["snapRestore"]["text"], out["snapRestore"]
    # the copy has the snapshot's files, the source its own later write
    assert not out["fromSnap"]["isError"], out["fromSnap"]
    assert out["fromSnap"]["structured"]["status"] == "RUNNING"
    assert "before" in out["copyRead"]["text"] and "after" in out["srcRead"]["text"]
    idle = out["idleDefault"]["structured"]
    assert idle["action"] == "stop" and idle["isDefault"] is True, idle
    assert not out["idleSet"]["isError"], out["idleSet"]
    assert out["idleGet"]["structured"] == {"action": "pause", "timeout": 3600,
                                            "effectiveTimeout": 3600, "isDefault": False}
    for bad in ("idleBad", "idleBadTimeout"):
        assert out[bad]["isError"] and "bad arguments" in out[bad]["text"], out[bad]
    assert not out["snapDelete"]["isError"], out["snapDelete"]
    for gone in ("snapGone", "snapDeleteGone"):
        assert out[gone]["isError"] and "HTTP 404" in out[gone]["text"], out[gone]
    # deleting the snapshot leaves the sandbox made from it as it was
    assert "before" in out["copyAfter"]["text"] and not out["copyAfter"]["isError"]
    st, o = daemon.call("io.pocketenv.sandbox.getSnapshots")
    assert all(s["name"] != "mcp-snapsdk-snap" for s in o["snapshots"]), o


def test_another_users_snapshot_tools_see_nothing(daemon):
    st, sb = daemon.call("io.pocketenv.sandbox.createSandbox",
                         body={"base": "busybox", "name": "mcp-snapown"})
    assert st == 200, sb
    daemon.wait_status(sb["id"], ["RUNNING"])
    st, snap = daemon.sandbox("createSnapshot", sb["id"], {"name": "mcp-owned"})
    assert st == 200, snap
    other = daemon.token_for("did:key:zMcpSnapshotThief")
    daemon.others.append(other)
    try:
        for key in ("mcp-owned", snap["snapshot"]["id"]):
            out = drive(daemon, "otherSnapshots", token=other, MCP_SNAPSHOT=key,
                        MCP_SANDBOX="mcp-snapown")
            for name in ("get", "delete", "fromSnap", "idleGet", "idleSet"):
                assert out[name]["isError"] and "HTTP 404" in out[name]["text"], (name, out[name])
            assert "mcp-owned" not in out["list"]["text"]
        st, o = daemon.call("io.pocketenv.sandbox.getSnapshot", {"id": "mcp-owned"})
        assert st == 200 and o["snapshot"]["id"] == snap["snapshot"]["id"]
        st, o = daemon.sandbox("getIdlePolicy", sb["id"])
        assert st == 200 and o["isDefault"] is True, o
    finally:
        daemon.call("io.pocketenv.sandbox.deleteSnapshot", {"id": "mcp-owned"}, post=True)
        daemon.sandbox("deleteSandbox", sb["id"])
